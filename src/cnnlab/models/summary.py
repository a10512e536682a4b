"""A layer-by-layer table of a model, like Keras' `model.summary()`.

One forward pass of a batch of one blank image records every layer's output shape; parameters
are counted per module, once each, so the totals equal `sum(p.numel() for p in model.parameters())`.
Batch-norm running statistics are buffers, not parameters, so (unlike Keras) they are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LayerRow:
    name: str  # dotted module path, as in `model.named_modules()`
    type: str  # the module's class name
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if the layer never ran
    params: int  # parameters owned directly by this module
    trainable: bool  # every one of those parameters has requires_grad (True when it has none)


@dataclass(frozen=True)
class ModelSummary:
    input_shape: tuple[int, int, int]  # (channels, height, width)
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    ends_with_linear: bool  # the last layer to run is an nn.Linear, so the output is logits


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _reported_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules, plus any module that owns parameters directly besides its children."""
    modules = model.named_modules()
    return [(name, module) for name, module in modules if _is_leaf(module) or _owns_parameters(module)]


def _shape_of(output: object) -> tuple[int, ...] | None:
    if isinstance(output, Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, (tuple, list)) and output:  # e.g. (output, state): report the first
        return _shape_of(output[0])
    return None


def _record_output_shapes(
    model: nn.Module, modules: list[tuple[str, nn.Module]], input_shape: tuple[int, int, int]
) -> tuple[dict[str, tuple[int, ...] | None], list[str]]:
    """Run one blank image through the model; return each module's output shape and the call order."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    call_order: list[str] = []

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            shapes.setdefault(name, _shape_of(output))  # a module reused later keeps its first shape
            call_order.append(name)

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules]
    first_parameter = next(model.parameters(), None)
    device = first_parameter.device if first_parameter is not None else torch.device("cpu")
    dtype = first_parameter.dtype if first_parameter is not None else torch.float32
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()  # batch-norm cannot compute batch statistics from a batch of one
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():  # restore per module: some may be frozen in eval
            module.train(training)
    return shapes, call_order


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelSummary:
    """Each layer's output shape and parameter count, for one image of `input_shape` (C, H, W).

    >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    >>> summary = summarize(model, (1, 28, 28))
    >>> [(row.name, row.output_shape, row.params) for row in summary.rows]
    [('0', (8, 26, 26), 80), ('1', (8, 26, 26), 0), ('2', (5408,), 0), ('3', (10,), 54090)]
    >>> summary.total_params
    54170
    """
    modules = _reported_modules(model)
    shapes, call_order = _record_output_shapes(model, modules, input_shape)
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return ModelSummary(
        input_shape=tuple(input_shape),
        rows=_rows(modules, shapes),
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        ends_with_linear=_last_leaf_is_linear(dict(modules), call_order),
    )


def _rows(modules: list[tuple[str, nn.Module]], shapes: dict[str, tuple[int, ...] | None]) -> list[LayerRow]:
    seen: set[int] = set()  # a parameter shared by two modules is counted for the first one only
    rows = []
    for name, module in modules:
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        count = sum(p.numel() for p in own)
        trainable = all(p.requires_grad for p in own)
        rows.append(LayerRow(name, type(module).__name__, shapes.get(name), count, trainable))
    return rows


def _last_leaf_is_linear(modules: dict[str, nn.Module], call_order: list[str]) -> bool:
    # A parent's hook fires after its children's, so skip parents to find the last layer that ran.
    leaves_run = [name for name in call_order if _is_leaf(modules[name])]
    return bool(leaves_run) and isinstance(modules[leaves_run[-1]], nn.Linear)


def shape_text(shape: tuple[int, ...] | None) -> str:
    """'32×26×26' for (32, 26, 26); '-' for a layer that never ran."""
    return "×".join(map(str, shape)) if shape is not None else "-"


def _layer_text(row: LayerRow) -> str:
    return f"{row.name} ({row.type})" if row.name else f"({row.type}, own parameters)"


def format_summary(summary: ModelSummary) -> str:
    """The summary as a text table, Keras style.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> print(format_summary(summarize(model, (1, 2, 2))))
    Input shape: 1×2×2
    ====================================
    Layer (type)   Output shape  Param #
    ------------------------------------
    0 (Flatten)    4                   0
    1 (Linear)     2                  10
    ====================================
    Total params: 10
    Trainable params: 10
    Non-trainable params: 0
    (softmax is applied by the loss/predict, not by the model)
    """
    header = ("Layer (type)", "Output shape", "Param #")
    table = [(_layer_text(row), shape_text(row.output_shape), f"{row.params:,}") for row in summary.rows]
    widths = [max(len(line[column]) for line in [header, *table]) for column in range(3)]

    def line(cells: tuple[str, str, str]) -> str:
        return f"{cells[0]:<{widths[0]}}   {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}"

    rule = sum(widths) + 5
    lines = [f"Input shape: {shape_text(summary.input_shape)}", "=" * rule, line(header), "-" * rule]
    lines += [line(cells) for cells in table]
    lines += [
        "=" * rule,
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.non_trainable_params:,}",
    ]
    if summary.ends_with_linear:
        lines.append("(softmax is applied by the loss/predict, not by the model)")
    return "\n".join(lines)
