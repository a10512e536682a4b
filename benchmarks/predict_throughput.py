"""Prediction throughput on image files: `cnnlab.predict` against an ONNX Runtime pipeline running
the same model on the same PNG files — decoding included, same batch size, same thread count.

    python benchmarks/predict_throughput.py                     # trains a 1-epoch guide-cnn first
    python benchmarks/predict_throughput.py --run runs/demo     # or uses a trained run
    python benchmarks/predict_throughput.py --files 300 --limit 3000   # a quick check

The files are Fashion-MNIST test images written as PNG to a temporary folder. Both pipelines list
the folder, decode every file with Pillow's PNG decoder, normalise with the mean/std recorded in the
checkpoint, run the network and turn its outputs into a label and a confidence per file. Model
loading (and ONNX export) happens before the clock starts; each pipeline runs `--repeats` times,
alternating, after one warm-up pass, and its best pass counts. Both must predict the same label
for at least 99.9% of the files. `cnnlab predict` on the command line is also timed once end to
end (a new process: Python start-up, imports, model loading), for the record.

ONNX Runtime runs twice: alternating with cnnlab, its idle threads told to sleep, and then on its
own with its default of spin-waiting threads; cnnlab is compared with the faster of the two.

ONNX Runtime missing -> only cnnlab is measured, with a message saying how to install it.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from _common import common_arguments, fashion_mnist, machine_info, markdown_table, use_threads, write_results

ORT_MISSING = ("ONNX Runtime is not installed in this environment, so only cnnlab is measured; install it "
               "(and onnx) with `pip install -e '.[bench]'` (or run `make bench`)")
MIN_AGREEMENT = 0.999
ORT_SPINNING = "onnxruntime, threads spin-waiting (its default)"


def write_png_files(folder: Path, count: int) -> np.ndarray:
    """The first `count` Fashion-MNIST test images as PNG files; returns their true labels."""
    from PIL import Image

    images, labels = fashion_mnist("test")
    for index in range(count):
        Image.fromarray(images[index], mode="L").save(folder / f"{index:05d}.png")
    return labels[:count]


def trained_model(args: argparse.Namespace, runs_dir: Path):
    import cnnlab

    run = args.run
    if run is None:
        print(f"training guide-cnn for {args.epochs} epoch(s) to have a model to predict with",
              file=sys.stderr)
        run = cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=args.epochs, limit=args.limit,
                           device="cpu", runs_dir=str(runs_dir), name="predict", quiet=True).run_dir
    return cnnlab.load(run, device="cpu")


# --- the two pipelines ---------------------------------------------------------------------------

def cnnlab_pipeline(trained, folder: Path, batch_size: int) -> Callable[[], list[str]]:
    import cnnlab

    def run() -> list[tuple[str, float]]:
        rows = cnnlab.predict(trained, [folder], batch_size=batch_size)
        return [(row["label"], row["confidence"]) for row in rows]
    return run


def export_onnx(trained, path: Path) -> str:
    """The checkpoint's network as ONNX (normalised float32 images in, logits out); returns the exporter."""
    import torch

    example = torch.zeros(1, *trained.input.shape)
    options = dict(input_names=["images"], output_names=["logits"],
                   dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    try:
        with warnings.catch_warnings():  # the classic exporter is deprecated but still the simplest here
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(trained.model, (example,), str(path), dynamo=False, **options)
        return "torch.onnx.export(dynamo=False)"
    except Exception as error:  # the TorchScript exporter may be gone in a future torch
        print(f"classic ONNX export failed ({error}); trying the dynamo exporter", file=sys.stderr)
        torch.onnx.export(trained.model, (example,), str(path), dynamo=True, **options)
        return "torch.onnx.export(dynamo=True)"


def onnxruntime_pipeline(trained, model_path: Path, folder: Path, batch_size: int, threads: int,
                         spin_wait: bool = False) -> Callable[[], list[tuple[str, float]]]:
    """What a deployment without cnnlab writes: list, decode with Pillow, normalise, run, softmax, argmax.

    `spin_wait` False turns off ONNX Runtime's default of keeping its idle worker threads spinning:
    they went on spinning after a pass and slowed the cnnlab pass that followed it (a median of 210
    against 172 ms over 8 passes), while ONNX Runtime's own passes took as long either way (medians
    of 203 and 215 ms spinning, 202 and 204 ms not).
    The benchmark also times the default, on its own, and compares cnnlab with the faster of the two.
    """
    import onnxruntime
    from PIL import Image

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    mean = np.array(trained.input.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(trained.input.std, dtype=np.float32).reshape(1, -1, 1, 1)
    mode = "L" if trained.input.channels == 1 else "RGB"
    class_names = trained.class_names

    def decode(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def run() -> list[tuple[str, float]]:
        files = sorted(folder.glob("*.png"))
        predictions: list[tuple[str, float]] = []
        for start in range(0, len(files), batch_size):
            batch = np.stack([decode(path) for path in files[start : start + batch_size]])
            inputs = (batch.astype(np.float32) / 255.0 - mean) / std
            logits = session.run(None, {"images": inputs})[0]
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            confidences = (exp / exp.sum(axis=1, keepdims=True)).max(axis=1)  # softmax, as cnnlab reports it
            predictions += [(class_names[int(index)], float(confidence))
                            for index, confidence in zip(logits.argmax(axis=1), confidences)]
        return predictions
    return run


# --- timing ---------------------------------------------------------------------------------------

def best_of(pipelines: dict[str, Callable[[], list]],
            repeats: int) -> tuple[dict[str, float], dict[str, list]]:
    """Seconds of each pipeline's best pass, and its predictions; passes alternate so that a busy
    moment hits both alike."""
    predictions = {name: run() for name, run in pipelines.items()}  # warm-up: file cache, thread pools
    best = {name: float("inf") for name in pipelines}
    for _ in range(repeats):
        for name, run in pipelines.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best, predictions


def cli_seconds(run_dir: Path, folder: Path, batch_size: int, scratch: Path) -> float | None:
    """`cnnlab predict RUN FOLDER` as a user runs it, in a new process."""
    executable = Path(sys.executable).parent / "cnnlab"
    if not executable.exists():
        return None
    command = [str(executable), "predict", str(run_dir), str(folder), "--batch-size", str(batch_size),
               "--device", "cpu", "--output", str(scratch / "predictions.csv")]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def report(results: dict[str, Any]) -> str:
    count = results["files"]
    header = ["pipeline", "images/s", "seconds for all files", "labels = cnnlab's", "test accuracy"]
    rows = []
    for name, entry in results["pipelines"].items():
        rows.append([name, f"{entry['images_per_s']:,.0f}", f"{entry['seconds']:.3f}",
                     f"{entry['agreement']:.2%}", f"{entry['accuracy']:.2%}"])
    lines = [f"{count:,} Fashion-MNIST test images as 28×28 PNG files, batch size {results['batch_size']}, "
             f"{results['threads']} thread(s); best of {results['repeats']} passes after a warm-up.", "",
             markdown_table(header, rows), ""]
    if "onnxruntime" in results["pipelines"]:
        difference = results["pipelines"]["onnxruntime"]["max_confidence_difference"]
        lines.append(f"- cnnlab.predict / ONNX Runtime: **{results['cnnlab_over_onnxruntime']:.2f}×** "
                     f"images/s, against the faster of its two thread settings (model exported with "
                     f"{results['onnx_exporter']}; confidences differ by at most {difference:.1e})")
        lines.append("- onnxruntime alternates with cnnlab.predict pass by pass, its idle threads sleeping; "
                     f"{ORT_SPINNING} is timed on its own afterwards, since threads spinning after its "
                     "pass slow the pass that follows")
        lines.append("- How they differ: the ONNX Runtime pipeline opens each file with Pillow's `Image.open` "
                     "and decodes a batch, then runs it, as such a script is usually written; cnnlab.predict "
                     "walks a plain PNG's chunks itself and hands its pixels to Pillow's decoder "
                     "(`cnnlab.data.plain_png`), and decodes the next batch on a thread while the model runs, "
                     "from the first batch on (the model leaving that thread a core, and keeping it free when "
                     "the first batch's timings show that pays)")
    else:
        lines.append(f"- ONNX Runtime: {results['onnxruntime_skipped']}")
    if results.get("cli_seconds"):
        lines.append(f"- `cnnlab predict RUN FOLDER` in a new process: {results['cli_seconds']:.2f} s for "
                     f"{count:,} files, start-up and model loading included "
                     f"({count / results['cli_seconds']:,.0f} images/s)")
    return "\n".join(lines)


def _scores(predictions: list[tuple[str, float]], reference: list[tuple[str, float]], truth: np.ndarray,
            class_names: list[str]) -> dict[str, float]:
    """Agreement with cnnlab's labels, largest confidence difference, and accuracy against the truth."""
    pairs = list(zip(predictions, reference))
    return {"agreement": float(np.mean([mine[0] == theirs[0] for mine, theirs in pairs])),
            "max_confidence_difference": max(abs(mine[1] - theirs[1]) for mine, theirs in pairs),
            "accuracy": float(np.mean([label == class_names[true]
                                       for (label, _), true in zip(predictions, truth)]))}


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    folder = scratch / "images"
    folder.mkdir()
    truth = write_png_files(folder, args.files)
    trained = trained_model(args, scratch / "runs")
    pipelines = {"cnnlab.predict": cnnlab_pipeline(trained, folder, args.batch_size)}
    results: dict[str, Any] = {}
    if importlib.util.find_spec("onnxruntime") is None:
        print(ORT_MISSING, file=sys.stderr)
        results["onnxruntime_skipped"] = ORT_MISSING
    else:
        results["onnx_exporter"] = export_onnx(trained, scratch / "model.onnx")
        pipelines["onnxruntime"] = onnxruntime_pipeline(trained, scratch / "model.onnx", folder,
                                                        args.batch_size, args.threads)
    seconds, predictions = best_of(pipelines, args.repeats)
    if "onnxruntime" in pipelines:  # its default, timed apart: its spinning threads would slow cnnlab's passes
        pipelines[ORT_SPINNING] = onnxruntime_pipeline(trained, scratch / "model.onnx", folder, args.batch_size,
                                                       args.threads, spin_wait=True)
        spinning_seconds, spinning_predictions = best_of({ORT_SPINNING: pipelines[ORT_SPINNING]}, args.repeats)
        seconds |= spinning_seconds
        predictions |= spinning_predictions
    results["pipelines"] = {name: _scores(predictions[name], predictions["cnnlab.predict"], truth,
                                          trained.class_names) | {"seconds": seconds[name],
                                                                  "images_per_s": args.files / seconds[name]}
                            for name in pipelines}
    if "onnxruntime" in pipelines:
        agreement = min(results["pipelines"][name]["agreement"] for name in ("onnxruntime", ORT_SPINNING))
        if agreement < MIN_AGREEMENT:
            raise SystemExit(f"ONNX Runtime agrees with cnnlab on only {agreement:.2%} of the files "
                             f"(at least {MIN_AGREEMENT:.1%} expected): the pipelines differ, "
                             f"so the timings mean nothing")
        results["cnnlab_over_onnxruntime"] = (min(seconds["onnxruntime"], seconds[ORT_SPINNING])
                                              / seconds["cnnlab.predict"])
    pipelines.clear()  # ONNX Runtime's sessions go, and their threads with them, before the timed command
    results["cli_seconds"] = cli_seconds(trained.run_dir, folder, args.batch_size, scratch)
    results["checkpoint"] = str(trained.checkpoint) if args.run else "a guide-cnn trained for this benchmark"
    return results


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="PNG files to predict [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="the same for both pipelines [default: %(default)s, as `cnnlab predict`]")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed passes per pipeline [default: %(default)s]")
    parser.add_argument("--run", help="a trained guide-cnn run folder; default: train one for --epochs")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs when training a model [default: %(default)s]")
    parser.add_argument("--limit", type=int, default=None,
                        help="training images when training a model (quick checks)")
    common_arguments(parser, default_output="predict_throughput")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    use_threads(args.threads)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-predict-") as folder:
        measured = measure(args, Path(folder))
    results = {"benchmark": "predict_throughput", "files": args.files, "batch_size": args.batch_size,
               "repeats": args.repeats, "threads": args.threads, "note": args.note, "machine": machine,
               **measured}
    text = report(results)
    print("\n" + text)
    write_results(args.output, "Prediction throughput: cnnlab.predict vs ONNX Runtime", results, text)


if __name__ == "__main__":
    main()
