"""`cnnlab serve`."""

from __future__ import annotations

import click

from cnnlab.cli.options import DEFAULT_MAX_IMAGE_PIXELS, PRECISIONS


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but loopback exposes the model to the network (a warning)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="0: a free port (the URL is printed)")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="images per forward pass: concurrent requests are batched together; 1 = one forward per request")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="how long a batch waits for more requests before it runs")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="requests waiting for the model at most; more get 503 with Retry-After")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="seconds a request may wait for its answer; then 504")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=20 << 20, show_default=True,
              help="larger request bodies get 413 before they are read whole")
@click.option("--max-files", type=click.IntRange(min=1), default=64, show_default=True,
              help="image files in one multipart request")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_IMAGE_PIXELS, show_default=True,
              help="images of more pixels are refused from their header (decompression bombs)")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="PyTorch threads; 0: every core but one (HTTP and decoding need one)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="arithmetic: auto = bfloat16 where the CPU/GPU has it natively, else fp32")
@click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up")
def serve_command(model: str, host: str, port: int, max_batch: int, max_wait_ms: float, max_queue: int,
                  timeout_s: float, max_body_bytes: int, max_files: int, max_image_pixels: int, threads: int,
                  device: str, precision: str, runs_dir: str) -> None:
    """Serve MODEL (a run folder or name, or an exported .onnx file) over HTTP: POST /predict, /explain,
    GET /info, /health, /metrics, API docs at /docs, and a page at / to try it in a browser."""
    from cnnlab.serve import ServeSettings, serve

    settings = ServeSettings(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, timeout_s=timeout_s, max_body_bytes=max_body_bytes,
                             max_files=max_files, max_image_pixels=max_image_pixels, threads=threads)
    serve(model, settings, device=device, precision=precision, runs_dir=runs_dir)
