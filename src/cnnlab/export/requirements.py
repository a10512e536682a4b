"""The optional packages export needs, imported with one clear error when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from cnnlab.errors import CnnlabError

INSTALL_HINT = "pip install 'cnnlab[export]'"


def require(module: str, purpose: str) -> ModuleType:
    """`import module`, or a CnnlabError saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CnnlabError(f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed "
                          f"({error}): {INSTALL_HINT}") from None
