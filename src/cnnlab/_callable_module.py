"""Let a sub-package double as the API function of the same name.

`cnnlab.train` is a package (the training code) and `cnnlab.train(...)` is the call that trains:
importing any `cnnlab.train.*` module binds the package to the name `cnnlab.train`, which would
shadow a function of that name. Making the package object itself callable gives both, whatever
was imported first, without importing torch until the call.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Make `sys.modules[module_name](...)` call `target` ("package.module:function")."""
    target_module, function_name = target.split(":")

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(target_module), function_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
