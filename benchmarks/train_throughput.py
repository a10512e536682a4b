"""Training throughput and test accuracy of guide-cnn on Fashion-MNIST: cnnlab against a plain
PyTorch loop and against the guide's Keras code — same machine, data, network, epochs, batch size,
thread count and 10% validation hold-out, in one run.

    python benchmarks/train_throughput.py                         # the full benchmark (10 epochs)
    python benchmarks/train_throughput.py --epochs 1 --limit 3000 # a quick check that it all works

Each contender trains in a fresh process. By default (`--order turns`) the three start together
and take turns, one epoch each, the order rotating every round: one computes while the others
wait on a pipe (see `_common.run_taking_turns`). This machine's speed drifts by 15-25% over
minutes; run one after another (`--order sequential`), each contender met a different phase of it,
and the ratios moved by as much between runs. Images/s counts
training only: cnnlab's from its run's metrics.csv (`images_per_s`), the others' from the same
span — the epoch's batches, without validation. Test accuracy is on the 10,000 test images, with
the weights after the last epoch. The FLOPs per image and the matmul peak (see flops.py) turn
images/s into the fraction of the machine's arithmetic that training uses.

Writes OUTPUT.json and OUTPUT.md (default benchmarks/results/train_throughput.*).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import guide_keras
from _common import (Turns, common_arguments, device_argument, machine_info, markdown_table, ratio,
                     run_in_fresh_process, run_taking_turns, use_threads, write_results, write_worker_output)

# cnnlab_whole: cnnlab with --batch-threads 1, each batch whole, every operation spread over the cores:
# what the batch threads add, side by side.
CONTENDERS = ("cnnlab", "cnnlab_whole", "plain", "keras")
# The settings the report names (those this cnnlab has); the JSON keeps the whole resolved config.
CNNLAB_SETTINGS_SHOWN = ("optimizer", "lr", "schedule", "weight_decay", "augment", "precision", "channels_last",
                         "compile", "batch_threads", "recipe")


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """`--set lr=0.01 --set schedule=cosine` -> {"lr": 0.01, "schedule": "cosine"} (YAML scalars)."""
    settings = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--set {pair!r}: write it as key=value (a `cnnlab train` option)")
        settings[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return settings


class WaitForTurn:
    """A cnnlab callback: before each epoch's clock starts, wait until it is this contender's turn."""

    def __init__(self, turns: Turns):
        self.turns = turns

    def on_epoch_begin(self, state, epoch: int, num_images: int) -> None:
        self.turns.wait(f"epoch {epoch}")


def train_cnnlab(*, epochs: int, batch_size: int, limit: int | None, threads: int, device: str = "cpu",
                 seed: int = 0, settings: dict[str, Any] | None = None,
                 turns: Turns | None = None) -> dict[str, Any]:
    """`cnnlab.train` (the public API), then `cnnlab.evaluate` of the last epoch's weights on the test set."""
    use_threads(threads)
    import cnnlab

    turns = turns or Turns()
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-runs-") as runs_dir:
        fields = {"device": device, "seed": seed, **(settings or {})}
        result = cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=epochs, batch_size=batch_size,
                              limit=limit, runs_dir=runs_dir, name="bench", quiet=True,
                              callbacks=[WaitForTurn(turns)], **fields)
        train_wall = time.perf_counter() - wall_start - turns.waited_seconds
        turns.wait("test")
        report = cnnlab.evaluate(result.last_checkpoint, split="test", device="cpu", quiet=True)
        rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
        train_images = json.loads((result.run_dir / "data.json").read_text())["train"]["images"]
        config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    return {"name": "cnnlab", "epochs": epochs, "batch_size": batch_size, "threads": threads, "device": device,
            "train_images": train_images,
            "epoch_train_seconds": [train_images / float(row["images_per_s"]) for row in rows],
            "history": [{"epoch": int(row["epoch"]), "train_loss": float(row["train_loss"]),
                         "val_accuracy": float(row["val_accuracy"])} for row in rows],
            "test_accuracy": report.metrics["accuracy"], "train_wall_seconds": train_wall,
            "wall_seconds": time.perf_counter() - wall_start - turns.waited_seconds,
            "config": config, "arithmetic": result.arithmetic}


def run_worker(args: argparse.Namespace) -> None:
    """Inside the fresh process: train one contender and write its result."""
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "limit": args.limit,
              "threads": args.threads}
    if args.worker != "keras":
        common["device"] = args.device
    if args.worker in ("cnnlab", "cnnlab_whole"):
        settings = parse_settings(args.set)
        if args.worker == "cnnlab_whole":
            settings["batch_threads"] = 1
        result = train_cnnlab(**common, settings=settings)
    elif args.worker == "plain":
        import plain_pytorch

        result = plain_pytorch.train_and_test(**common)
    else:
        result = guide_keras.train_and_test(**common)
    write_worker_output(args.worker_output, result)


def summarise(result: dict[str, Any], flops: dict[str, float]) -> dict[str, Any]:
    """Add images/s (all epochs, and epochs 2+ when there are any) and the share of the matmul peak."""
    if "error" in result or "skipped" in result:
        return result
    seconds = result["epoch_train_seconds"]
    result["train_seconds"] = sum(seconds)
    result["images_per_s"] = result["train_images"] * len(seconds) / result["train_seconds"]
    if len(seconds) > 1:  # without the first epoch's one-off costs (graph tracing, allocator warm-up)
        result["images_per_s_after_epoch_1"] = result["train_images"] * (len(seconds) - 1) / sum(seconds[1:])
    # The fastest epoch: what the contender does when nothing else claims the cores (like timeit's minimum).
    result["images_per_s_best_epoch"] = result["train_images"] / min(seconds)
    if result.get("epoch_setup_seconds"):  # Keras: its epochs less fit's idle iterator set-up
        batches_only = [total - setup for total, setup in zip(seconds, result["epoch_setup_seconds"])]
        result["epoch_seconds_without_setup"] = batches_only
        result["setup_seconds"] = sum(result["epoch_setup_seconds"])
        result["images_per_s_without_setup"] = result["train_images"] * len(seconds) / sum(batches_only)
    result["train_gflops"] = result["images_per_s"] * flops["train_flops_per_image"] / 1e9
    result["fraction_of_matmul_peak"] = result["train_gflops"] / flops["matmul_peak_gflops"]
    return result


def skip_reason(name: str, args: argparse.Namespace) -> str | None:
    if name == "keras" and args.device != "cpu":
        return f"the guide's Keras code is timed on the CPU only (not on {args.device})"
    if name == "keras" and not guide_keras.available():
        return guide_keras.MISSING
    return None


def worker_arguments(name: str, args: argparse.Namespace, epochs: int) -> list[str]:
    arguments = ["--worker", name, "--epochs", str(epochs), "--batch-size", str(args.batch_size),
                 "--threads", str(args.threads), "--device", args.device]
    arguments += ["--limit", str(args.limit)] if args.limit else []
    for pair in args.set:
        arguments += ["--set", pair]
    return arguments


def run_contenders(names: list[str], args: argparse.Namespace, epochs: int) -> dict[str, dict[str, Any]]:
    """Each contender in a fresh process: taking turns an epoch at a time (`--order turns`), or one
    whole run after another (`--order sequential`)."""
    results, runnable = {}, {}
    for name in names:
        reason = skip_reason(name, args)
        if reason:
            print(reason, file=sys.stderr)
            results[name] = {"name": "guide Keras code", "skipped": reason}
        else:
            runnable[name] = worker_arguments(name, args, epochs)
    setting = f"{epochs} epoch(s), batch {args.batch_size}, {args.threads} thread(s), {args.device}"
    if args.order == "turns" and len(runnable) > 1:
        print(f"\n== {', '.join(runnable)} taking turns, an epoch each: {setting}", file=sys.stderr)
        results.update(run_taking_turns(Path(__file__), runnable))
    else:
        for name, arguments in runnable.items():
            print(f"\n== {name}: {setting}", file=sys.stderr)
            results[name] = run_in_fresh_process(Path(__file__), arguments)
    return {name: results[name] for name in names}


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    labels = {"cnnlab": "cnnlab (`cnnlab.train`)", "cnnlab_whole": "cnnlab, batches whole (`--batch-threads 1`)",
              "plain": "plain PyTorch loop", "keras": "guide Keras code",
              "keras_reference": "guide Keras code (reference run)"}
    rows = []
    for key, result in results.items():
        if "skipped" in result or "error" in result:
            rows.append([labels[key], "–", "–", "–", "–", "–", "–", result.get("skipped") or result["error"]])
            continue
        rows.append([labels[key], result["epochs"], f"{result['images_per_s']:,.0f}",
                     f"{result['images_per_s_best_epoch']:,.0f}", f"{result['train_seconds']:.1f}",
                     f"{result['test_accuracy']:.2%}", f"{result['fraction_of_matmul_peak']:.1%}",
                     f"{result['wall_seconds']:.1f}"])
    return rows


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    speed = {key: result.get("images_per_s") for key, result in results.items()}
    best = {key: result.get("images_per_s_best_epoch") for key, result in results.items()}
    accuracy = {key: result.get("test_accuracy") for key, result in results.items()}
    epoch_by_epoch = {other: median_epoch_ratio(results["cnnlab"], results.get(other))
                      for other in ("cnnlab_whole", "plain", "keras")}
    keras = results.get("keras") or {}
    median_without_setup = None
    if "epoch_seconds_without_setup" in keras:
        without_setup = {**keras, "epoch_train_seconds": keras["epoch_seconds_without_setup"]}
        median_without_setup = median_epoch_ratio(results["cnnlab"], without_setup)
    return {"cnnlab_over_cnnlab_whole_images_per_s": ratio(speed["cnnlab"], speed.get("cnnlab_whole")),
            "cnnlab_over_cnnlab_whole_median_epoch": epoch_by_epoch["cnnlab_whole"],
            "cnnlab_over_plain_images_per_s": ratio(speed["cnnlab"], speed.get("plain")),
            "cnnlab_over_keras_images_per_s": ratio(speed["cnnlab"], speed.get("keras")),
            "cnnlab_over_plain_best_epoch": ratio(best["cnnlab"], best.get("plain")),
            "cnnlab_over_keras_best_epoch": ratio(best["cnnlab"], best.get("keras")),
            "cnnlab_over_plain_median_epoch": epoch_by_epoch["plain"],
            "cnnlab_over_keras_median_epoch": epoch_by_epoch["keras"],
            "cnnlab_over_keras_without_keras_setup": ratio(speed["cnnlab"], keras.get("images_per_s_without_setup")),
            "cnnlab_over_keras_median_epoch_without_keras_setup": median_without_setup,
            "cnnlab_minus_plain_test_accuracy": _difference(accuracy["cnnlab"], accuracy.get("plain")),
            "cnnlab_minus_keras_test_accuracy": _difference(accuracy["cnnlab"], accuracy.get("keras"))}


def median_epoch_ratio(cnnlab: dict[str, Any], other: dict[str, Any] | None) -> float | None:
    """The median over epochs 2, 3, ... of (other's seconds for epoch k) / (cnnlab's for epoch k).

    When the contenders take turns, epoch k of each ran within seconds of the other's, on the
    same phase of the machine's drift: each pair is a side-by-side comparison, and the median of
    the pairs is what a drift cannot move. Epoch 1 is left out (one-off set-up costs).
    """
    if not other or "epoch_train_seconds" not in other or "epoch_train_seconds" not in cnnlab:
        return None
    pairs = list(zip(cnnlab["epoch_train_seconds"], other["epoch_train_seconds"]))[1:]
    if not pairs:
        return None
    # images/s over images/s, in case the two counted their training images differently
    return statistics.median(theirs * other["train_images"] / (ours * cnnlab["train_images"])
                             for ours, theirs in pairs)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio_line(other: str, speed: float | None, best: float | None, median: float | None,
                accuracy: float | None) -> str:
    if speed is None:
        return f"- cnnlab / {other}: not measured"
    per_epoch = f", median of epoch-by-epoch ratios {median:.2f}×" if median is not None else ""
    return (f"- cnnlab / {other}: **{speed:.2f}×** images/s ({best:.2f}× comparing best epochs{per_epoch}), "
            f"test accuracy {accuracy:+.2%} (percentage points)")


def _keras_setup_line(keras: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """How much of Keras' time was `fit` setting up each epoch's tf.data iterator (idle waits)."""
    if not keras.get("setup_seconds") or found.get("cnnlab_over_keras_without_keras_setup") is None:
        return []
    longest = max(keras["epoch_setup_seconds"])
    return [f"- Keras' training seconds include {keras['setup_seconds']:.1f} s in which `fit` replaced "
            f"each epoch's tf.data iterator (up to {longest:.1f} s in an epoch, the process idle); without "
            f"them: cnnlab / guide Keras **{found['cnnlab_over_keras_without_keras_setup']:.2f}×** "
            f"(median of epoch-by-epoch ratios "
            f"{found['cnnlab_over_keras_median_epoch_without_keras_setup']:.2f}×)"]


def _batch_threads_line(contenders: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What training each batch in parts on threads (`--batch-threads`) gave against batches whole."""
    if found.get("cnnlab_over_cnnlab_whole_images_per_s") is None:
        return []
    arithmetic = contenders["cnnlab"].get("arithmetic", "?")
    median = found.get("cnnlab_over_cnnlab_whole_median_epoch")
    per_epoch = f", median of epoch-by-epoch ratios {median:.2f}×" if median is not None else ""
    return [f"- cnnlab ({arithmetic}) / cnnlab with each batch whole (`--batch-threads 1`): "
            f"**{found['cnnlab_over_cnnlab_whole_images_per_s']:.2f}×** images/s{per_epoch}"]


ORDER_NOTES = {
    "turns": "The contenders trained at the same time, taking turns an epoch each (the order rotating "
             "every round; one computes while the others wait), so that a drift in the machine's speed "
             "meets them alike.",
    "sequential": "The contenders ran one after another (`--order sequential`): a drift in the machine's "
                  "speed between their runs shows in the ratios.",
}


def report(results: dict[str, Any]) -> str:
    flops, found = results["flops"], results["ratios"]
    header = ["contender", "epochs", "train images/s", "best epoch images/s", "training s",
              "test accuracy", "of matmul peak", "wall s"]
    config = results["contenders"]["cnnlab"].get("config", {})
    cnnlab_config = {key: config[key] for key in CNNLAB_SETTINGS_SHOWN if key in config}
    train_images = next((r["train_images"] for r in results["contenders"].values() if "train_images" in r), 0)
    lines = [
        f"guide-cnn on Fashion-MNIST, batch size {results['batch_size']}, {results['threads']} thread(s), "
        f"device {results.get('device', 'cpu')}, "
        f"{train_images:,} training images "
        f"(10% of the training split held out for validation). Test accuracy on the 10,000 test images "
        f"with the weights after the last epoch.",
        "",
        markdown_table(header, table_rows(results["contenders"])),
        "",
        _ratio_line("plain PyTorch", found["cnnlab_over_plain_images_per_s"],
                    found["cnnlab_over_plain_best_epoch"], found.get("cnnlab_over_plain_median_epoch"),
                    found["cnnlab_minus_plain_test_accuracy"]),
        _ratio_line("guide Keras", found["cnnlab_over_keras_images_per_s"],
                    found["cnnlab_over_keras_best_epoch"], found.get("cnnlab_over_keras_median_epoch"),
                    found["cnnlab_minus_keras_test_accuracy"]),
        *_keras_setup_line(results["contenders"].get("keras", {}), found),
        *_batch_threads_line(results["contenders"], found),
        f"- {ORDER_NOTES[results.get('order', 'sequential')]}",
        f"- FLOPs per training image (forward + backward, convolutions and matmuls): "
        f"{flops['train_flops_per_image'] / 1e6:.2f} M ({flops['forward_flops_per_image'] / 1e6:.2f} M "
        f"forward); float32 matmul peak measured on {flops.get('device', 'cpu')} "
        f"({flops['threads']} CPU thread(s)): "
        f"{flops['matmul_peak_gflops']:.1f} GFLOP/s",
        f"- cnnlab's settings: {', '.join(f'{k} {v}' for k, v in cnnlab_config.items())}; the plain loop and "
        f"Keras use Adam at its default rate (0.001), constant.",
        "- wall s: the whole contender — reading the data, training, validation, checkpoints, "
        "test evaluation.",
    ]
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs for every contender [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=128, help="[default: %(default)s]")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on a seeded subset of N images (quick checks)")
    parser.add_argument("--keras-epochs", type=int, default=10,
                        help="also run the guide's Keras code for this many epochs when it differs from "
                             "--epochs: the reference time_to_accuracy.py compares with (0: don't) "
                             "[default: %(default)s]")
    parser.add_argument("--order", choices=("turns", "sequential"), default="turns",
                        help="turns: the contenders train at once, taking turns an epoch each, so that the "
                             "machine's speed drifts alike for all; sequential: one whole run after another "
                             "[default: %(default)s]")
    parser.add_argument("--only", choices=CONTENDERS, action="append",
                        help="run only these contenders (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a cnnlab.train option for the cnnlab contender, e.g. --set lr=0.01 "
                             "(repeatable)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    device_argument(parser)
    common_arguments(parser, default_output="train_throughput")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    if args.worker:
        return run_worker(args)
    import flops as flop_counting

    if "cnnlab" not in (args.only or CONTENDERS):
        raise SystemExit("--only without cnnlab: nothing to compare against")
    machine = machine_info(args.device)
    flops = flop_counting.measure(args.batch_size, args.threads, args.device)
    contenders = run_contenders(list(args.only or CONTENDERS), args, args.epochs)
    wanted_keras = "keras" in (args.only or CONTENDERS) and guide_keras.available()
    if args.keras_epochs and args.keras_epochs != args.epochs and wanted_keras:
        contenders["keras_reference"] = run_contenders(["keras"], args, args.keras_epochs)["keras"]
    # The peak is a ceiling: measured again at the end, the better of the two counts.
    peak_at_end = flop_counting.matmul_peak_gflops(args.threads, args.device)
    flops["matmul_peak_gflops"] = max(flops["matmul_peak_gflops"], peak_at_end)
    contenders = {name: summarise(result, flops) for name, result in contenders.items()}
    results = {"benchmark": "train_throughput", "device": args.device, "epochs": args.epochs,
               "batch_size": args.batch_size,
               "limit": args.limit, "threads": args.threads, "order": args.order,
               "cnnlab_settings": parse_settings(args.set),
               "note": args.note, "machine": machine, "flops": flops, "contenders": contenders,
               "ratios": ratios(contenders)}
    text = report(results)
    print("\n" + text)
    write_results(args.output, "Training throughput: cnnlab vs plain PyTorch vs the guide's Keras code",
                  results, text)


if __name__ == "__main__":
    main()
