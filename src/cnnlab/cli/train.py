"""`cnnlab train`: its flags are generated from `TrainConfig`, so flags and config keys never drift."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Collection, get_args, get_type_hints

import click

from cnnlab.config import TrainConfig


def _click_type(hint: Any, choices: tuple[str, ...] | None) -> Any:
    if choices:
        return click.Choice(choices)
    declared = [t for t in get_args(hint) if t is not type(None)] or [hint]
    if len(declared) > 1:
        return str  # e.g. `--lr 0.01` or `--lr auto`: TrainConfig's coercion decides
    return {int: int, float: float, str: str}.get(declared[0], str)


def config_options(function: Callable, *, only: Collection[str] | None = None) -> Callable:
    """One --flag per TrainConfig field (or per field named in `only`). Defaults are None so that only
    flags the user typed override a config file; the real defaults are shown in --help from the dataclass."""
    hints = get_type_hints(TrainConfig)
    for field in reversed(dataclasses.fields(TrainConfig)):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if hints[field.name] in (bool, bool | None):
            option = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text)
        else:
            default = field.default
            shown = f" [default: {default}]" if default not in (None, "") and "[default" not in help_text else ""
            option = click.option(flag, field.name, type=_click_type(hints[field.name], field.metadata["choices"]),
                                  default=None, help=help_text + shown)
        function = option(function)
    return function


@click.command("train")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file with the same keys as the flags (flags override it)")
@click.option("--resume", type=str, default=None,
              help="continue a run folder where it stopped (may raise --epochs, which rebuilds the "
                   "learning-rate schedule for the new length from the step reached, or --patience)")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
@click.option("--nproc", type=int, default=None,
              help="train with N processes on this machine (DistributedDataParallel via torchrun)")
@config_options
def train_command(config_file: str | None, resume: str | None, quiet: bool, nproc: int | None,
                  **flags: Any) -> None:
    """Train a CNN on images: writes a run folder with config, metrics, curves and checkpoints.

    \b
    Examples:
      cnnlab train --data fashion-mnist --model guide-cnn --epochs 3
      cnnlab train --data photos/ --model resnet18 --image-size 128 --augment standard
      cnnlab train --data labels.csv --task regression --model net.yaml
      cnnlab train --resume runs/guide-cnn-fashion-mnist --epochs 10
    """
    overrides = {name: value for name, value in flags.items() if value is not None}
    if nproc is not None and nproc != 1 and "WORLD_SIZE" not in os.environ:
        from cnnlab.train.distributed import launch

        status = launch(nproc, _as_arguments(config_file, resume, quiet, overrides))
        if status:
            sys.exit(status)
        return
    from cnnlab.train.trainer import train

    result = train(config_file, resume=resume, quiet=quiet, **overrides)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process answers
        click.echo(f"run folder: {result.run_dir}")
        if not quiet:  # what a newcomer does next (stderr: stdout stays the one line a script reads)
            run = result.run_dir
            click.echo(f"next: cnnlab evaluate {run} | cnnlab predict {run} IMAGES | cnnlab explain {run} IMAGE "
                       f"| cnnlab report {run}", err=True)


def _as_arguments(config_file: str | None, resume: str | None, quiet: bool, overrides: dict[str, Any]) -> list[str]:
    """The same `cnnlab train` arguments again, for the processes torchrun starts."""
    arguments = (["--config", config_file] if config_file else []) + (["--resume", resume] if resume else [])
    arguments += ["--quiet"] if quiet else []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            arguments.append(flag if value else f"--no-{flag[2:]}")
        else:
            arguments += [flag, str(value)]
    return arguments
