"""Frames a second through `cnnlab predict` on a video, at the video's resolution, next to the
decode-only rate (the limit: the model cannot predict frames faster than they are decoded: the
reader's frames as RGB pictures, the faster of its two ways to decode: FFmpeg's frame threads or one
thread; and FFmpeg's decoding alone, no frame turned into pixels), for
guide-cnn and the from-scratch detector cnnlab-det; and Ultralytics YOLOv8n's `predict` on the same
video as the peer (bench venv only; built from yolov8n.yaml: random weights, nothing downloaded).

    python benchmarks/video_throughput.py                    # 160×160, 300 frames, every core
    python benchmarks/video_throughput.py --threads 2 --size 160 --frames 300

The video is the generated moving-items clip (cnnlab.video.moving_items: Fashion-MNIST items moving
on a black canvas), H.264 in .mp4. The models are trained for one short epoch first (the speed of a
network does not depend on its weights): guide-cnn on 512 Fashion-MNIST images (28×28 grey: frames
are fitted to it, as `cnnlab predict` does), cnnlab-det on 64 canvases of the video's size. Each rate
is the best of `--repeats` passes over the whole video, after a warm-up pass; rows are collected,
no annotated video is written (that is the encoder's speed, not the model's).

Targets (issue 24): cnnlab-det ≥ 30 frames/s at 160×160 on 2 cores; guide-cnn ≥ 0.8× the decode-only rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import common_arguments, fashion_mnist_folder, machine_info, markdown_table, use_threads, write_results

YOLO_WORKER = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
from ultralytics import YOLO
model = YOLO("yolov8n.yaml")  # the architecture only: random weights, no download
best, cpu_ms = None, None
for attempt in range(int(sys.argv[4]) + 1):  # the first pass warms up
    started, started_cpu, frames = time.perf_counter(), cpu(), 0
    for result in model.predict(source=sys.argv[1], imgsz=int(sys.argv[2]), device="cpu", stream=True,
                                verbose=False, batch=1):
        frames += 1
    rate = frames / (time.perf_counter() - started)
    if attempt and (best is None or rate > best):
        best, cpu_ms = rate, 1000 * (cpu() - started_cpu) / frames
print(json.dumps({"frames": frames, "frames_per_s": best, "cpu_ms_per_frame": cpu_ms}))
"""


def _train(runs: Path, name: str, *args: Any) -> Path:
    subprocess.run([sys.executable, "-m", "cnnlab", "train", *map(str, args), "--runs-dir", str(runs), "--name", name,
                    "-q"], check=True)
    return runs / name


def _cpu_seconds() -> float:
    """CPU time of this process, all its threads: a figure the machine's other load barely changes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best_rate(run: Any, repeats: int, frames: int) -> dict[str, float]:
    """The best pass's frames/s (after a warm-up pass) and its CPU milliseconds a frame."""
    best = {"frames_per_s": 0.0, "cpu_ms_per_frame": 0.0}
    for attempt in range(repeats + 1):
        started_cpu = _cpu_seconds()
        rate = run()
        if attempt and rate > best["frames_per_s"]:
            best = {"frames_per_s": rate, "cpu_ms_per_frame": 1000 * (_cpu_seconds() - started_cpu) / frames}
    return best


def decode_rate(video: Path, repeats: int, count: int) -> dict[str, Any]:
    """The reader's frames as RGB pictures, the faster of its two ways to decode them: FFmpeg's frame
    threads or one decoding thread (the reader chooses by frame size, `FRAME_THREADS_FROM_PIXELS`;
    the limit is the fastest the reader can give the frames, whichever it would choose)."""
    from cnnlab.video import decode
    from cnnlab.video.sources import describe_source

    def once() -> float:
        reader = decode.VideoReader(describe_source(str(video)))
        started = time.perf_counter()
        frames = sum(1 for _ in reader.frames())
        return frames / (time.perf_counter() - started)

    chosen_by_size = decode.FRAME_THREADS_FROM_PIXELS
    ways = {}
    try:
        for way, threshold in (("frame threads", 0), ("one thread", sys.maxsize)):
            decode.FRAME_THREADS_FROM_PIXELS = threshold
            ways[way] = _best_rate(once, repeats, count)
    finally:
        decode.FRAME_THREADS_FROM_PIXELS = chosen_by_size
    fastest = max(ways, key=lambda way: ways[way]["frames_per_s"])
    return {**ways[fastest], "decoding": fastest, "ways": ways}


def bare_decode_rate(video: Path, repeats: int, count: int) -> dict[str, float]:
    """FFmpeg's decoding alone, set up as the reader sets it up for this video (frame threads or one
    thread, by frame size), no frame turned into pixels."""
    from cnnlab.video.decode import VideoInfo, _choose_decoding_threads
    from cnnlab.video.engine import pyav

    av = pyav()

    def once() -> float:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context
            _choose_decoding_threads(stream, VideoInfo(codec.width, codec.height, 0.0, codec.name, 0, None))
            started = time.perf_counter()
            frames = sum(1 for _ in container.decode(stream))
            return frames / (time.perf_counter() - started)

    return _best_rate(once, repeats, count)


def model_rate(run: Path, video: Path, repeats: int, batch_size: int, count: int) -> dict[str, Any]:
    from cnnlab.trained import load
    from cnnlab.video.run import VideoOptions, predict_video

    trained = load(run, device="cpu")
    frames = []

    def once() -> float:
        result = predict_video(trained, video, options=VideoOptions(batch_size=batch_size, progress=False))
        frames.append(len(result.rows))
        return result.frames_per_second

    return {**_best_rate(once, repeats, count), "frames": frames[-1], "input": list(trained.input.shape)}


def forward_cost(run: Path, batch_size: int, repeats: int) -> dict[str, Any]:
    """The model alone: CPU ms a frame of `trained.outputs` on batches of uint8 frames already at its
    input (no decoding, no fitting, no rows), the best of `repeats` timed passes over 3,000 frames, on
    the threads `cnnlab predict` gives the model while a file decodes: one fewer than the cores (on a
    busy machine a second thread waiting for the first costs more CPU than it saves)."""
    import torch

    from cnnlab.device import intra_op_threads
    from cnnlab.trained import load

    trained = load(run, device="cpu")
    images = torch.randint(0, 256, (batch_size, *trained.input.shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    passes = max(1, 3000 // batch_size)
    threads = max(1, torch.get_num_threads() - 1)
    best = float("inf")
    with intra_op_threads(threads):
        trained.outputs(images)
        for _ in range(repeats):
            started = _cpu_seconds()
            for _ in range(passes):
                trained.outputs(images)
            best = min(best, 1000 * (_cpu_seconds() - started) / (passes * batch_size))
    return {"cpu_ms_per_frame": best, "batch_size": batch_size, "threads": threads}


def _thread_cpu(tasks: Path) -> dict[tuple[int, str], float]:
    """CPU seconds (user + system) of each of this process's threads, by (thread id, its name in
    /proc: FFmpeg names its frame threads "av:h264:df0", ...), from /proc/self/task/*/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for task in tasks.iterdir():
        try:
            stat, name = (task / "stat").read_text(), (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # after the name, which may hold spaces
        seconds[(int(task.name), name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return seconds


def thread_split(run: Path, video: Path, passes: int) -> dict[str, float] | None:
    """Where `cnnlab predict`'s CPU goes, ms a frame over `passes` passes: the model's thread (this
    one, `time.thread_time`), cnnlab's decoding thread and FFmpeg's frame threads (read from /proc
    every 20 ms: each thread's last 20 ms or less is missed), and the whole process (`resource`,
    less the sampling thread). Linux only: None elsewhere."""
    import threading
    from collections import defaultdict

    from cnnlab.trained import load
    from cnnlab.video.run import VideoOptions, predict_video

    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    trained = load(run, device="cpu")
    predict_video(trained, video, options=VideoOptions(progress=False))  # warm-up
    names, seen, sampler_cpu, done = {}, {}, [], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            names.update({thread.native_id: thread.name for thread in threading.enumerate()})
            seen.update(_thread_cpu(tasks))
        sampler_cpu.append(time.thread_time())

    before, started_model, started_all, frames = _thread_cpu(tasks), time.thread_time(), _cpu_seconds(), 0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(passes):
        frames += len(predict_video(trained, video, options=VideoOptions(progress=False)).rows)
    model, process = time.thread_time() - started_model, _cpu_seconds() - started_all
    done.set()
    sampler.join()
    others: dict[str, float] = defaultdict(float)
    for (thread_id, name), seconds in seen.items():
        if names.get(thread_id) == "cnnlab-video-decoder":
            others["decoding_thread"] += seconds - before.get((thread_id, name), 0.0)
        elif name.startswith("av:"):
            others["ffmpeg_frame_threads"] += seconds - before.get((thread_id, name), 0.0)
    return {name: 1000 * seconds / frames for name, seconds in
            {"model_thread": model, **others, "process": process - sampler_cpu[0]}.items()}


def _reader_decoding(side: int) -> str:
    """How the reader decodes a side×side video: FFmpeg's frame threads or one thread."""
    from cnnlab.video.decode import FRAME_THREADS_FROM_PIXELS

    return "frame threads" if side * side >= FRAME_THREADS_FROM_PIXELS else "one thread"


def _file_batch() -> int:
    """The batch `cnnlab predict` gives a file's frames when nothing is drawn."""
    from cnnlab.video.run import DEFAULT_BATCH_WITHOUT_PICTURES

    return DEFAULT_BATCH_WITHOUT_PICTURES


def ceiling(decode_only_rate: float, bare_decode_cpu_ms: float, model_cpu_ms: float, cores: int) -> float:
    """The highest fraction of the decode-only rate R (frames a ms) a pipeline can reach. It runs the
    model (f CPU ms a frame) on one core fewer than `cores`, as `cnnlab predict` does while a file
    decodes (at least one), so at most m / f frames a ms; and it decodes every frame (at least FFmpeg's
    bare decoding, b) and runs the model on it on `cores` cores, so at most cores / (b + f):
    min(m / f, cores / (b + f)) / R. Fitting frames, rows and hand-offs only lower it. (Decode-only
    is the faster of its one-thread and frame-thread ways: with one thread it uses one core.)"""
    model_cores = max(1, cores - 1)
    return min(model_cores / model_cpu_ms, cores / (bare_decode_cpu_ms + model_cpu_ms)) / (decode_only_rate / 1000)


def yolo_rate(video: Path, size: int, threads: int, repeats: int, python: str) -> dict[str, Any] | None:
    done = subprocess.run([python, "-c", YOLO_WORKER, str(video), str(size), str(threads), str(repeats)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"YOLOv8n not measured ({python}: {done.stderr.strip().splitlines()[-1:] or 'failed'}); "
              "run in the bench venv: make bench-video", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, default_output="video_throughput")
    parser.add_argument("--size", type=int, default=160, help="the video's side in pixels [default: %(default)s]")
    parser.add_argument("--frames", type=int, default=300, help="frames in the video [default: %(default)s]")
    parser.add_argument("--repeats", type=int, default=3, help="passes per contender after a warm-up [%(default)s]")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="frames the model takes at once [default: predict's: 64 without pictures]")
    parser.add_argument("--yolo-python", default=sys.executable,
                        help="the Python that has ultralytics [default: this one]")
    arguments = parser.parse_args()
    use_threads(arguments.threads)
    machine = machine_info()  # here, so that its load average is the one at the start
    from cnnlab.data.canvases import write_fashion_canvases
    from cnnlab.video.moving_items import write_moving_items

    fashion = fashion_mnist_folder()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        video = write_moving_items(work / "items.mp4", fashion_mnist_dir=fashion, frames=arguments.frames,
                                   canvas=arguments.size, items=4).path
        canvases = write_fashion_canvases(work / "canvases", fashion_mnist_dir=fashion, canvas=arguments.size,
                                          train_images=64, val_images=8, test_images=4)
        runs = work / "runs"
        guide = _train(runs, "guide", "--data", "fashion-mnist", "--model", "guide-cnn", "--epochs", 1, "--limit", 512)
        detector = _train(runs, "det", "--task", "detection", "--data", canvases, "--epochs", 1)
        count = arguments.frames
        rates = {"decode, no pixels": bare_decode_rate(video, arguments.repeats, count),
                 "decode-only": decode_rate(video, arguments.repeats, count),
                 "guide-cnn": model_rate(guide, video, arguments.repeats, arguments.batch_size, count),
                 "cnnlab-det": model_rate(detector, video, arguments.repeats, arguments.batch_size, count)}
        forward = {name: forward_cost(run, arguments.batch_size or _file_batch(), arguments.repeats)
                   for name, run in (("guide-cnn", guide), ("cnnlab-det", detector))}
        threads = thread_split(guide, video, arguments.repeats)
        peer = yolo_rate(video, arguments.size, arguments.threads, arguments.repeats, arguments.yolo_python)
        if peer is not None:
            rates["YOLOv8n (Ultralytics predict)"] = peer
    decode = rates["decode-only"]["frames_per_s"]
    cores = arguments.threads
    rows = [[name, f"{values['frames_per_s']:.1f}", f"{values['frames_per_s'] / decode:.2f}",
             f"{values['cpu_ms_per_frame']:.2f}", f"{1000 * cores / values['cpu_ms_per_frame']:.0f}"]
            for name, values in rates.items()]
    command = "python benchmarks/video_throughput.py " + " ".join(sys.argv[1:])
    batch = arguments.batch_size or "predict's default (64: no pictures)"
    body = (f"`{command}`: a {arguments.size}×{arguments.size} H.264 video of {arguments.frames} frames, "
            f"{arguments.threads} threads, batches of {batch} frames; "
            f"best of {arguments.repeats} "
            "passes. CPU ms a frame: all the process's threads (decoding included); on a busy machine the\n"
            f"frames/s measure the share of the cores it got, and {cores} cores' worth of CPU time over the CPU ms\n"
            "a frame is what an idle machine would allow at most.\n\n"
            + markdown_table(["pipeline", "frames/s", "× decode-only", "CPU ms/frame", f"frames/s if {cores} idle cores"],
                             rows))
    ways = rates["decode-only"]["ways"]
    body += ("\n\ndecode-only is the faster of the reader's two ways to decode: "
             + ", ".join(f"{way} {values['frames_per_s']:.1f} frames/s "
                         f"({values['cpu_ms_per_frame']:.3f} CPU ms)" for way, values in ways.items())
             + f"; the reader itself decodes this video with {_reader_decoding(arguments.size)}.")
    bare_cpu = rates["decode, no pixels"]["cpu_ms_per_frame"]
    body += ("\n\nThe model alone (`trained.outputs` on uint8 batches of "
             f"{arguments.batch_size or _file_batch()} frames already at its input, no decoding, "
             f"{max(1, cores - 1)} thread(s) as in the pipeline): "
             + "; ".join(f"{name} {values['cpu_ms_per_frame']:.3f} CPU ms a frame" for name, values in forward.items())
             + f". A pipeline runs the model (f) on {max(1, cores - 1)} thread(s), and decodes every frame "
             "(at least FFmpeg's bare decoding, b CPU ms a frame) and runs the model on it on "
             f"{cores} cores: it reaches at most min({max(1, cores - 1)} / f, {cores} / (b + f)) frames a ms, "
             "as a fraction of the decode-only rate: "
             + "; ".join(f"{name} {ceiling(decode, bare_cpu, values['cpu_ms_per_frame'], cores):.2f}×"
                         for name, values in forward.items()) + ".\n")
    if threads is not None:
        body += ("\nguide-cnn's CPU by thread, ms a frame over " f"{arguments.repeats} more passes: "
                 + ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in threads.items())
                 + " (the model's thread exact; the decoding and FFmpeg's threads read from /proc"
                   " every 20 ms).\n")
    print(body)
    write_results(arguments.output, "Video throughput", {"machine": machine, "note": arguments.note,
                                                           "command": command, "rates": rates,
                                                           "model_alone": forward,
                                                           "guide_cnn_threads": threads}, body)


if __name__ == "__main__":
    main()
