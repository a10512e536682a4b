"""`cnnlab export`."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("run")
@click.option("--format", "model_format", type=click.Choice(["onnx", "torchscript"]), default="onnx",
              show_default=True, help="onnx: runs in ONNX Runtime and most inference engines; torchscript: "
                                      "torch.jit.load, or libtorch from C++")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the file to write [default: RUN/export/model.onnx, or model.pt for torchscript]")
@click.option("--fp16", is_flag=True, help="onnx: float16 weights and arithmetic (half the size); uint8 in, "
                                          "float32 out as before")
@click.option("--optimize", is_flag=True,
              help="onnx: save ONNX Runtime's graph optimisations (fused conv/batch-norm/activation) into "
                   "the file; it is then for ONNX Runtime")
@click.option("--opset", type=int, help="onnx: the ONNX opset to target [default: the exporter's]")
@click.option("--force", is_flag=True,
              help="replace --output even when it holds a file cnnlab did not export")
@click.option("--check-images", "check_images_count", type=int, default=32, show_default=True,
              help="how many of the run's validation images the exported file is checked on")
@click.option("--check-data", multiple=True,
              help="check on these image files or folders instead (when the run's data is not on this "
                   "machine)")
@click.option("--tolerance", type=float,
              help="largest max |Δ| of the outputs allowed, relative to max(1, largest output) "
                   "[default: 1e-4; 1e-2 with --fp16]")
@click.option("--data-dir", help="where named datasets are looked for (also $CNNLAB_DATA)")
@click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up")
def export_command(run: str, model_format: str, output: str | None, fp16: bool, optimize: bool,
                   opset: int | None, force: bool, check_images_count: int, check_data: tuple[str, ...],
                   tolerance: float | None, data_dir: str | None, runs_dir: str) -> None:
    """Export RUN's best model to one self-contained file (weights, class names, input size,
    normalisation and task inside), checked against the PyTorch model on real images before it is
    kept. `cnnlab predict` and `cnnlab evaluate` take the file in place of RUN."""
    from cnnlab.export.export import export

    result = export(run, format=model_format, output=output, fp16=fp16, optimize=optimize, opset=opset,
                    force=force, check_images_count=check_images_count, check_data=list(check_data) or None,
                    tolerance=tolerance, data_dir=data_dir, runs_dir=runs_dir)
    click.echo(result.check.describe())
    click.echo(f"exported {result.path} ({result.format}, {result.precision} weights, "
               f"{result.size_bytes / 1e6:.1f} MB, {result.exporter})")
