"""How much arithmetic one training image costs, and how much arithmetic this machine can do.

  * FLOPs per training image: `torch.utils.flop_counter.FlopCounterMode` over one training step
    (forward, loss, backward) of guide-cnn at the benchmark's batch size, divided by the batch
    size. It counts convolutions and matrix multiplies (a multiply-add is 2 FLOPs) — nearly all
    of the work; ReLU, pooling, the loss and the optimiser update are elementwise and not counted.
  * Matmul peak: the best of several large float32 `torch.mm` calls with the same thread count as
    training — a practical ceiling for dense float32 arithmetic on this CPU, not the datasheet's.

Training FLOP/s = FLOPs per image × images per second; its share of the peak says how much of the
machine the training loop turns into useful arithmetic.

    python benchmarks/flops.py            # prints both numbers
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import cores, synchronize, use_threads


def _guide_cnn(image_size: int) -> torch.nn.Module:
    import cnnlab

    return cnnlab.create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(image_size,) * 2)


def training_flops_per_image(batch_size: int = 128, image_size: int = 28) -> float:
    """Counted FLOPs of one guide-cnn training step (forward + backward) per image."""
    model = _guide_cnn(image_size)
    images = torch.randn(batch_size, 1, image_size, image_size)
    labels = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
    return counter.get_total_flops() / batch_size


def forward_flops_per_image(image_size: int = 28) -> float:
    model = _guide_cnn(image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 1, image_size, image_size))
    return float(counter.get_total_flops())


def matmul_peak_gflops(threads: int, device: str = "cpu", size: int | None = None, repeats: int = 10) -> float:
    """Best-of-`repeats` float32 GFLOP/s of a size×size matrix product (2·size³ FLOPs each).

    On a GPU the product is 8192² (a 2048² one leaves most of a large GPU idle) and plain float32,
    as PyTorch computes it by default (TF32 off), with the clock read after the GPU has finished."""
    use_threads(threads)
    size = size or (8192 if device.startswith("cuda") else 2048)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(2):  # warm up: thread pool start, page faults on first touch, kernel selection
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def measure(batch_size: int, threads: int, device: str = "cpu") -> dict[str, float | str]:
    return {"train_flops_per_image": training_flops_per_image(batch_size),
            "forward_flops_per_image": forward_flops_per_image(),
            "matmul_peak_gflops": matmul_peak_gflops(threads, device), "threads": threads, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=cores())
    parser.add_argument("--device", default="cpu", help="where to measure the matmul peak: cpu, cuda, cuda:N")
    args = parser.parse_args()
    print(json.dumps(measure(args.batch_size, args.threads, args.device), indent=2))


if __name__ == "__main__":
    main()
