"""The `cnnlab` command: a thin shell over the Python API, one small module per command.

Command modules import only click at the top; torch and friends are imported inside each command,
so `cnnlab --help` answers instantly.
"""

from __future__ import annotations

import sys

import click

from cnnlab import __version__
from cnnlab.cli.evaluate import evaluate_command
from cnnlab.cli.models import datasets_command, models_command, summary_command
from cnnlab.cli.predict import predict_command
from cnnlab.cli.train import train_command
from cnnlab.errors import CnnlabError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """cnnlab: train, evaluate and use convolutional neural networks on your images.

    \b
    Quick start:
      cnnlab train --data fashion-mnist --model guide-cnn --epochs 3 --name demo
      cnnlab evaluate runs/demo
      cnnlab predict runs/demo my-images/ --top-k 3
    """


for command in (train_command, evaluate_command, predict_command, models_command, summary_command,
                datasets_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; a CnnlabError becomes one clear line on stderr, exit status 2."""
    try:
        cli.main(args=argv, prog_name="cnnlab", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except CnnlabError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
