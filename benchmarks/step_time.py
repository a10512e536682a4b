"""Milliseconds per training step of several cnnlab models, side by side in one process.

    python benchmarks/step_time.py                                   # fast-cnn-v2 against fast-cnn
    python benchmarks/step_time.py guide-cnn fast-cnn my-net.yaml    # any registered model or YAML network
    python benchmarks/step_time.py fast-cnn-v2@128 fast-cnn-v2@512   # MODEL@BATCH: one model, two batch sizes

A step is what `cnnlab train` does for a batch of Fashion-MNIST-sized images (1×28×28, 10 classes):
forward pass under the precision cnnlab picks for the device (bf16 autocast on a CPU that has it),
channels-last, label-smoothed cross-entropy, backward pass and a fused AdamW step — cnnlab's own
`Performance` object, as the training loop uses it. The models take turns, a round of steps each,
their order reversed every round, so the machine's drift (15–25% within minutes on a VM) falls on
all of them alike; the medians and each model's time per image against the first's are the result
(per image, so that contenders at different batch sizes compare). The images are random: the
arithmetic of a step does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from _common import common_arguments, device_argument, machine_info, markdown_table, synchronize, \
    use_threads, write_results


def _contender(name: str, device: torch.device, batch_size: int) -> dict[str, Any]:
    from cnnlab.models.build import create_model
    from cnnlab.performance import resolve_performance

    torch.manual_seed(0)
    performance = resolve_performance(device)
    model = performance.prepare_model(
        create_model(name, in_channels=1, num_outputs=10, image_size=(28, 28)).to(device)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    images = performance.prepare_inputs(torch.randn(batch_size, 1, 28, 28, device=device))
    labels = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        with performance.autocast():
            loss = F.cross_entropy(model(images).float(), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        performance.backward_and_step(loss, optimizer)

    return {"step": step, "precision": performance.describe(),
            "parameters": sum(p.numel() for p in model.parameters())}


def model_and_batch(contender: str, default_batch: int) -> tuple[str, int]:
    """"fast-cnn-v2@512" -> ("fast-cnn-v2", 512); without "@", the --batch-size."""
    model, at, batch = contender.rpartition("@") if "@" in contender else (contender, "", "")
    if not at:
        return contender, default_batch
    if not batch.isdigit() or int(batch) < 1:
        raise SystemExit(f"{contender}: the batch size after '@' must be a positive whole number")
    return model, int(batch)


def measure(names: list[str], *, device: str, batch_size: int, rounds: int, steps: int) -> dict[str, Any]:
    where = torch.device(device)
    batches = {name: model_and_batch(name, batch_size)[1] for name in names}
    contenders = {name: _contender(model_and_batch(name, batch_size)[0], where, batches[name]) for name in names}
    for contender in contenders.values():  # warm-up: oneDNN picks and caches its kernels
        for _ in range(10):
            contender["step"]()
    milliseconds: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(rounds):
        for name in names if turn % 2 == 0 else names[::-1]:
            synchronize(device)
            started = time.perf_counter()
            for _ in range(steps):
                contenders[name]["step"]()
            synchronize(device)
            milliseconds[name].append((time.perf_counter() - started) / steps * 1000)
    per_image = {name: statistics.median(times) / batches[name] for name, times in milliseconds.items()}
    return {name: {"median_ms": statistics.median(times), "rounds_ms": times, "batch_size": batches[name],
                   "median_us_per_image": per_image[name] * 1000,
                   "ratio_to_first": per_image[name] / per_image[names[0]],
                   "precision": contenders[name]["precision"], "parameters": contenders[name]["parameters"]}
            for name, times in milliseconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["fast-cnn", "fast-cnn-v2"],
                        help="registered model names or YAML files; the first is the baseline "
                             "[default: fast-cnn fast-cnn-v2]")
    parser.add_argument("--batch-size", type=int, default=128, help="[default: %(default)s]")
    parser.add_argument("--rounds", type=int, default=8, help="turns each model takes [default: %(default)s]")
    parser.add_argument("--steps", type=int, default=30, help="steps in a turn [default: %(default)s]")
    device_argument(parser)
    common_arguments(parser, default_output="step_time")
    arguments = parser.parse_args()
    if len(arguments.models) < 2:
        parser.error("give at least two models to compare")
    use_threads(arguments.threads)
    machine = machine_info(arguments.device)
    results = measure(arguments.models, device=arguments.device, batch_size=arguments.batch_size,
                      rounds=arguments.rounds, steps=arguments.steps)
    rows = [[f"`{name}`", f"{r['parameters']:,}", r["precision"], str(r["batch_size"]), f"{r['median_ms']:.2f}",
             f"{r['median_us_per_image']:.1f}", f"{r['ratio_to_first']:.3f}×",
             " ".join(f"{t:.1f}" for t in r["rounds_ms"])]
            for name, r in results.items()]
    table = markdown_table(["model", "parameters", "precision", "batch", "median ms per step", "µs per image",
                            f"time per image against `{arguments.models[0]}`", "each round (ms)"], rows)
    print(table)
    body = (f"Batches of 1×28×28 images (batch {arguments.batch_size} unless a name says @BATCH), {arguments.rounds} rounds of {arguments.steps} "
            f"steps each, the models taking turns (`python benchmarks/step_time.py "
            f"{' '.join(arguments.models)}`).\n\n{table}")
    write_results(Path(arguments.output), "Training step time, side by side",
                  {"machine": machine, "note": arguments.note, "batch_size": arguments.batch_size,
                   "models": results}, body)


if __name__ == "__main__":
    main()
