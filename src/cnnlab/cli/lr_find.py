"""`cnnlab lr-find`: the learning-rate range test, with the same data and model flags as `train`."""

from __future__ import annotations

from functools import partial
from typing import Any

import click

from cnnlab.cli.train import config_options

# The train flags that change what the sweep sees; the rest (epochs, lr, run naming...) do not apply.
SWEEP_FIELDS = frozenset({
    "data", "model", "task", "batch_size", "optimizer", "momentum", "beta2", "weight_decay", "label_smoothing", "seed",
    "device", "workers", "split", "data_dir", "image_size", "channels", "augment", "limit", "strict", "cache",
    "weights", "init_from", "freeze", "fine_tune", "backbone_lr_factor", "few_shot", "runs_dir", "recipe",
})


@click.command("lr-find")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file with the same keys as `cnnlab train`'s flags (flags override it)")
@click.option("--steps", type=int, default=200, show_default=True,
              help="batches to sweep over (fewer if the loss blows up first)")
@click.option("--start-lr", type=float, default=1e-7, show_default=True,
              help="learning rate of the first step")
@click.option("--end-lr", type=float, default=10.0, show_default=True, help="learning rate of the last step")
@click.option("--output", type=click.Path(file_okay=False),
              help="folder for lr_find.png and lr_find.csv [default: <runs-dir>/lr-find-<model>-<data>]")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
@partial(config_options, only=SWEEP_FIELDS)
def lr_find_command(config_file: str | None, steps: int, start_lr: float, end_lr: float, output: str | None,
                    quiet: bool, **flags: Any) -> None:
    """Find a learning rate: train briefly while the rate grows, plot loss against rate, suggest one.

    The suggestion is a tenth of the rate with the lowest (smoothed) loss; `train --lr auto`
    runs this sweep first and trains with it.

    \b
    Examples:
      cnnlab lr-find --data fashion-mnist --model guide-cnn
      cnnlab lr-find --data photos/ --model resnet18 --weights imagenet --freeze --image-size 128
    """
    from cnnlab.train.lr_find import find_lr

    overrides = {name: value for name, value in flags.items() if value is not None}
    result = find_lr(config_file, output=output, steps=steps, start_lr=start_lr, end_lr=end_lr, quiet=quiet,
                     **overrides)
    click.echo(f"suggested learning rate: {result.suggestion:.3g}")
    click.echo(f"plot: {result.plot}")
