"""Train each batch as equal parts on several threads, one CPU core each.

PyTorch spreads every operation over the cores (intra-op parallelism): each convolution, each
pooling, each ReLU is cut up, and the cores meet at a barrier after it. For a small network the
operations are short, so the meeting costs a large share of them. Cutting the batch instead —
one part per core, each part's forward and backward pass on its own thread with one intra-op
thread — lets each core run a whole step's worth of operations without waiting for the other;
the parts' gradients are added before the optimiser step. That is data parallelism inside one
process, as DistributedDataParallel does across processes, and the gradient is the whole batch's
mean gradient, as before (only the order of the additions differs).

Measured on 2 cores (docs/speed.md, "Batch threads"): guide-cnn at batch 128 trains as fast as
with whole batches while PyTorch's threads answer each other promptly, and keeps that speed when
they do not — in this VM's slow phases, when waking a sleeping OpenMP thread costs tens of
microseconds at each of a step's many barriers, whole batches take ~15 ms a step against ~12.
`--recipe fast` (fast-cnn-v2) ended its 5 epochs 0.91× as soon over seeds 0-4, at the same accuracy.

Batch norm: every part after the first runs a copy of the network that shares its weights but owns
its buffers (`part_models`), so each part normalises by its own images ("ghost batch norm") and no
two threads write to one tensor; the network keeps the first part's running statistics. It is not
for every network:
  * dropout's random masks would be drawn by the threads in whatever order they reach the random
    number generator, so a seed would no longer fix the run;
  * the optimiser step runs on one core, which for a large network (AlexNet's 61M weights)
    costs more than the threads gain — measured 2× slower.
So `auto` (see `choose_batch_threads`) takes it for small networks without dropout, on 2 cores (the
machine it was measured on; with more, --batch-threads N asks for it).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Callable

import torch
from torch import Tensor, nn

from cnnlab.device import intra_op_threads

MIN_IMAGES_PER_THREAD = 32  # below this a part's operations are too short to gain from their own core
MAX_AUTO_THREADS = 2  # the only core count it was measured on; more cores: --batch-threads N
MAX_AUTO_PARAMETERS = 1_000_000  # the optimiser's single-threaded step must stay small


def _random_layers(model: nn.Module) -> list[str]:
    """Layers that draw random numbers in training (dropout, randomized ReLU, torchvision's stochastic
    depth in EfficientNet): threads would draw in no fixed order."""
    return [name or "the model" for name, module in model.named_modules()
            if isinstance(module, (nn.modules.dropout._DropoutNd, nn.RReLU))
            or type(module).__name__ == "StochasticDepth"]  # by name: importing torchvision takes a second


def choose_batch_threads(setting: str | int, model: nn.Module, *, device: torch.device, batch_size: int,
                         distributed: bool, compiled: bool) -> int:
    """How many threads train each batch (1 = PyTorch's usual way).

    `setting` is --batch-threads: "auto", or a number the user chose (checked against what
    cannot work: a GPU, DDP, a compiled model, dropout).
    """
    cores = torch.get_num_threads()
    if str(setting) != "auto":
        threads = int(setting)
        if threads > 1:
            _refuse_if_unsupported(threads, model, device=device, distributed=distributed, compiled=compiled)
        return threads
    if device.type != "cpu" or distributed or compiled:
        return 1
    if cores < 2 or cores > MAX_AUTO_THREADS:
        return 1
    if batch_size < 2 * MIN_IMAGES_PER_THREAD:
        return 1
    if _random_layers(model) or sum(p.numel() for p in model.parameters()) > MAX_AUTO_PARAMETERS:
        return 1
    return min(cores, batch_size // MIN_IMAGES_PER_THREAD)


def _refuse_if_unsupported(threads: int, model: nn.Module, *, device: torch.device, distributed: bool,
                           compiled: bool) -> None:
    from cnnlab.errors import ConfigError

    if device.type != "cpu":
        raise ConfigError(f"--batch-threads {threads} splits batches across CPU cores; on {device} leave it "
                          "at auto or 1")
    if distributed:
        raise ConfigError(f"--batch-threads {threads}: each DDP process already takes its share of the batch; "
                          "use --nproc or --batch-threads, not both")
    if compiled:
        raise ConfigError(f"--batch-threads {threads} cannot run a --compile'd model on several threads; "
                          "pass one of them")
    random = _random_layers(model)
    if random:
        raise ConfigError(f"--batch-threads {threads}: layer {random[0]!r} draws random numbers (dropout), "
                          "which threads would draw in no fixed order, so the seed would not fix the run; "
                          "use --batch-threads 1 for this model")


class BatchThreads:
    """Helper threads that each compute one part of a batch's gradient; the calling thread
    computes the first part itself. Use as a context manager around an epoch's steps."""

    def __init__(self, threads: int):
        if threads < 2:
            raise ValueError("BatchThreads needs 2 or more threads")
        self.threads = threads
        self._work: list[Callable[[], None] | None] = [None] * threads
        self._start = [threading.Semaphore(0) for _ in range(threads)]
        self._done = threading.Semaphore(0)
        self._errors: list[BaseException | None] = [None] * threads
        self._helpers: list[threading.Thread] = []
        self._stopping = False
        self._intra_op: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> "BatchThreads":
        # The calling thread too computes on one core from now on: a second intra-op thread of its
        # own would spin, waiting for work, on the core a helper needs.
        self._intra_op = intra_op_threads(1)
        self._intra_op.__enter__()
        for index in range(1, self.threads):
            helper = threading.Thread(target=self._serve, args=(index,), name=f"cnnlab-batch-part-{index}",
                                      daemon=True)
            helper.start()
            self._helpers.append(helper)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        for index in range(1, self.threads):
            self._start[index].release()
        for helper in self._helpers:
            helper.join()
        assert self._intra_op is not None
        self._intra_op.__exit__(None, None, None)

    def _serve(self, index: int) -> None:
        torch.set_num_threads(1)
        while True:
            self._start[index].acquire()
            if self._stopping:
                return
            self._errors[index] = None
            try:
                work = self._work[index]
                assert work is not None
                work()
            except BaseException as error:  # handed to the calling thread, which raises it
                self._errors[index] = error
            finally:
                self._done.release()

    def run(self, parts: list[Callable[[], None]]) -> None:
        """Run parts[0] here and the others on the helpers, in parallel; return when all are done."""
        if len(parts) > self.threads:
            raise ValueError(f"{len(parts)} parts for {self.threads} threads")
        for index, part in enumerate(parts[1:], start=1):
            self._work[index] = part
            self._start[index].release()
        try:
            parts[0]()
        finally:
            for _ in parts[1:]:
                self._done.acquire()
        for error in self._errors[1:len(parts)]:
            if error is not None:
                raise error


def batch_parts(count: int, parts: int) -> list[slice]:
    """`parts` contiguous slices of nearly equal size covering range(count) (none empty)."""
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def add_gradients(parameters: list[nn.Parameter], part_gradients: list[tuple[Tensor | None, ...]]) -> None:
    """Set each parameter's .grad to the sum of the parts' gradients, added in the parts' order
    (so the result does not depend on which thread finished first), in the parameter's own memory
    layout: the fused Adam step walks a weight and its gradient element by element."""
    for index, parameter in enumerate(parameters):
        gradients = [grads[index] for grads in part_gradients if grads[index] is not None]
        if not gradients:
            parameter.grad = None
            continue
        total = torch.empty_like(parameter, memory_format=torch.preserve_format).copy_(gradients[0])
        for gradient in gradients[1:]:
            total.add_(gradient)
        parameter.grad = total


def part_models(model: nn.Module, parts: int) -> list[nn.Module]:
    """The module each part of a batch runs: `model` for the first, and for the others copies that
    share its parameters (so every part's gradient lands on the same weights) but own their
    buffers: each part's batch norm then normalises by its own images and updates its own running
    statistics, so no two threads write to the same tensor. Only `model`'s statistics — from the
    first part of every batch, a random share of it — are kept. The copies take each layer's
    train/eval mode as it is now (a callback may have frozen some batch norm)."""
    if not any(True for _ in model.buffers()):
        return [model] * parts
    copies = [model]
    for _ in range(parts - 1):
        replica = copy.deepcopy(model)
        for original, duplicate in zip(model.modules(), replica.modules()):
            for name, parameter in original._parameters.items():
                duplicate._parameters[name] = parameter
        copies.append(replica)
    return copies
