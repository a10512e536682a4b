"""Interpretability: what a trained network looks at.

    feature_maps.py  which layers are "stages", forward hooks that collect their outputs, grids
    filters.py       the first convolution's learned filters as a grid
    gradcam.py       Grad-CAM heatmaps (of any score the task names: a class, a value, a box) and overlays
    explain.py       `cnnlab explain`: all of the above for a run and some images

The ideas themselves, on any image without a model, are in `cnnlab.teach`; the HTML page per run in
`cnnlab.report`. Every module imports torch/numpy/matplotlib at the top; the CLI imports them inside
its commands.

Calling the package runs it: `cnnlab.explain(run, ["image.png"])` is
`cnnlab.explain.explain.explain` (see there for the arguments).
"""

from cnnlab._callable_module import make_callable

make_callable(__name__, "cnnlab.explain.explain:explain")
