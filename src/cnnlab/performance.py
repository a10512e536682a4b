"""How fast the arithmetic runs: number precision, memory layout and compilation.

  precision   fp32 everywhere, or mixed precision: convolutions and matrix products in bfloat16
              (CPUs with AVX512-BF16 or AMX, recent GPUs) or float16 (older GPUs, with loss
              scaling so small gradients don't vanish), while weights, the loss and the optimiser
              stay float32. "auto" picks the fastest safe choice for the device.
  channels_last  images stored as N×H×W×C: the layout oneDNN and cuDNN convolutions prefer.
  compile     torch.compile: fuses small operations into larger kernels (slow first epoch).
  batch_threads  on a CPU, each training batch in parts, one thread and core each (batch_threads.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.train.host_memory import keep_freed_memory

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX), where it speeds training up.
    Elsewhere bfloat16 is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None


@dataclass
class Performance:
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    batch_threads: int = 1  # >1: each training batch in parts on that many threads (batch_threads.py)

    def __post_init__(self) -> None:
        # float16 has a narrow range: scale the loss so small gradients don't underflow to zero.
        use_scaler = self.autocast_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Put `model` in the chosen memory layout (in place; its state_dict keys are unchanged)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, module: nn.Module) -> nn.Module:
        """The module the training loop calls: compiled when asked (after any DDP wrapping)."""
        return torch.compile(module) if self.compile else module

    def prepare_inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def loss_scaler_state(self) -> dict[str, Any] | None:
        """The float16 loss scale and its growth tracker, for the training state (None without one)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def restore_loss_scaler(self, state: dict[str, Any] | None) -> None:
        """Continue with a resumed run's loss scale rather than the initial 65,536, which would skip
        the first steps again while the scale backs off."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def describe(self) -> str:
        parts = [self.precision_name]
        if self.channels_last:
            parts.append("channels-last")
        if self.compile:
            parts.append("compiled")
        if self.batch_threads > 1:
            parts.append(f"each batch in {self.batch_threads} parts on {self.batch_threads} threads")
        return ", ".join(parts)


def resolve_performance(device: torch.device, *, precision: str = "auto", channels_last: bool | None = None,
                        compile: bool = False) -> Performance:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 needs a GPU; on a CPU use bf16 (or auto)")
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise ConfigError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16/AMX), so it would be "
                          "slower than fp32; use --precision fp32 or auto")
    layout = device.type in ("cpu", "cuda") if channels_last is None else channels_last
    if device.type == "cpu":
        keep_freed_memory()  # batch-sized tensors reuse pages instead of faulting in fresh ones
    return Performance(device, _autocast_dtype(precision, device), layout, compile)
