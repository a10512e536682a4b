"""Evaluation and prediction: metrics, confusion matrices, prediction tables.

Calling the package evaluates: `cnnlab.evaluate(run, data=..., split="test")` is
`cnnlab.evaluate.evaluate.evaluate` (see there for the arguments).
"""

from cnnlab._callable_module import make_callable

make_callable(__name__, "cnnlab.evaluate.evaluate:evaluate")
