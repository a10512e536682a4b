"""Exporting a trained model to a file that runs without cnnlab's training code: ONNX or TorchScript.

Calling the package exports: `cnnlab.export(run, format="onnx")` is `cnnlab.export.export.export`
(see there for the arguments). `cnnlab.load("model.onnx")` gives the file back as an
`ExportedModel` (cnnlab.export.exported), which predict, evaluate and serve use as they use a run.
"""

from cnnlab._callable_module import make_callable

make_callable(__name__, "cnnlab.export.export:export")
