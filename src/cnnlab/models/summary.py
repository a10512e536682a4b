"""A layer-by-layer table of a model, like Keras' `model.summary()`, with each layer's arithmetic.

One forward pass of a batch of one blank image records every layer's output shape; parameters
are counted per module, once each, so the totals equal `sum(p.numel() for p in model.parameters())`.
Batch-norm running statistics are buffers, not parameters, so (unlike Keras) they are not counted.

Multiply-adds are counted for convolutions and dense layers, per image: a convolution does
(input channels / groups) × kernel height × kernel width of them for every value of its output,
a dense layer one per input for every output. Side by side with the parameter counts they show
what makes a CNN a CNN: a filter's few weights are reused at every position of the image, so the
convolutions hold a minority of the parameters and do nearly all of the arithmetic.
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
    mult_adds: int = 0  # per image, convolutions and dense layers only (summed over repeated calls)


@dataclass(frozen=True)
class ModelSummary:
    input_shape: tuple[int, int, int]  # (channels, height, width)
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    ends_with_linear: bool  # the last layer to run is an nn.Linear, so the output is logits

    @property
    def mult_adds(self) -> int:
        return sum(row.mult_adds for row in self.rows)

    def share(self, kind: str) -> tuple[float, float]:
        """(fraction of the parameters, fraction of the multiply-adds) in layers of `kind`:
        "conv" or "dense"."""
        rows = [row for row in self.rows if _kind(row.type) == kind]
        params = sum(row.params for row in rows) / self.total_params if self.total_params else 0.0
        work = sum(row.mult_adds for row in rows) / self.mult_adds if self.mult_adds else 0.0
        return params, work


def percent(fraction: float) -> str:
    """'59.7%'; 'over 99.9%' rather than a 100.0% that is not all of it."""
    return "over 99.9%" if 0.999 <= fraction < 1 else f"{fraction:.1%}"


def _kind(module_type: str) -> str:
    return "conv" if module_type.startswith("Conv") else "dense" if module_type == "Linear" else ""


def _mult_adds(module: nn.Module, output: object) -> int:
    """Multiply-adds of one call of a convolution or dense layer, for one image (the batch is 1)."""
    if not isinstance(output, Tensor):
        return 0
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


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
) -> tuple[dict[str, tuple[int, ...] | None], list[str], dict[str, int]]:
    """Run one blank image through the model; return each module's output shape, the call order
    and each module's multiply-adds."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    call_order: list[str] = []
    mult_adds: dict[str, int] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            shapes.setdefault(name, _shape_of(output))  # a module reused later keeps its first shape
            call_order.append(name)
            mult_adds[name] = mult_adds.get(name, 0) + _mult_adds(module, output)

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
    return shapes, call_order, mult_adds


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
    shapes, call_order, mult_adds = _record_output_shapes(model, modules, input_shape)
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return ModelSummary(
        input_shape=tuple(input_shape),
        rows=_rows(modules, shapes, mult_adds),
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        ends_with_linear=_last_leaf_is_linear(dict(modules), call_order),
    )


def _rows(modules: list[tuple[str, nn.Module]], shapes: dict[str, tuple[int, ...] | None],
          mult_adds: dict[str, int]) -> list[LayerRow]:
    seen: set[int] = set()  # a parameter shared by two modules is counted for the first one only
    rows = []
    for name, module in modules:
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        count = sum(p.numel() for p in own)
        trainable = all(p.requires_grad for p in own)
        rows.append(LayerRow(name, type(module).__name__, shapes.get(name), count, trainable, mult_adds.get(name, 0)))
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
    ===============================================
    Layer (type)   Output shape  Param #  Mult-adds
    -----------------------------------------------
    0 (Flatten)    4                   0
    1 (Linear)     2                  10          8
    ===============================================
    Total params: 10
    Trainable params: 10
    Non-trainable params: 0
    Multiply-adds per image: 8
    (softmax is applied by the loss/predict, not by the model)
    """
    header = ("Layer (type)", "Output shape", "Param #", "Mult-adds")
    table = [(_layer_text(row), shape_text(row.output_shape), f"{row.params:,}",
              f"{row.mult_adds:,}" if row.mult_adds else "") for row in summary.rows]
    widths = [max(len(line[column]) for line in [header, *table]) for column in range(4)]

    def line(cells: tuple[str, str, str, str]) -> str:
        return (f"{cells[0]:<{widths[0]}}   {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}  "
                f"{cells[3]:>{widths[3]}}").rstrip()

    rule = sum(widths) + 7
    lines = [f"Input shape: {shape_text(summary.input_shape)}", "=" * rule, line(header), "-" * rule]
    lines += [line(cells) for cells in table]
    lines += [
        "=" * rule,
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.non_trainable_params:,}",
        f"Multiply-adds per image: {summary.mult_adds:,}",
    ]
    conv_params, conv_work = summary.share("conv")
    if conv_work and conv_work < 1:  # convolutions beside other layers: the CNN lesson in two numbers
        lines.append(f"Convolutions: {percent(conv_params)} of the parameters, {percent(conv_work)} of the "
                     "multiply-adds (a filter's weights are reused at every position)")
    if summary.ends_with_linear:
        lines.append("(softmax is applied by the loss/predict, not by the model)")
    return "\n".join(lines)
