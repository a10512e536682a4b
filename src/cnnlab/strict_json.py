"""JSON that every reader accepts: Python writes nan and ±inf as bare `NaN`/`Infinity`, which are
not JSON (a browser's `JSON.parse`, `jq` and most other languages refuse the whole file).

A number that is not finite is written as `null` instead: a validation loss of a run without
validation images, an R² over constant targets, a loss that diverged.

>>> to_json_text({"val_loss": float("nan"), "epoch": 2}, indent=None)
'{"val_loss": null, "epoch": 2}'
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every nan, inf and -inf inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def to_json_text(value: Any, *, indent: int | None = 2) -> str:
    """`json.dumps` that never writes NaN or Infinity (they become null); a newline ends an indented file."""
    text = json.dumps(finite_or_none(value), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text
