"""Training: the loop, its callbacks, optimisers and schedules, checkpoints.

Calling the package trains: `cnnlab.train(data=..., model=..., epochs=...)` is
`cnnlab.train.trainer.train` (see there for the arguments).
"""

from cnnlab._callable_module import make_callable

make_callable(__name__, "cnnlab.train.trainer:train")
