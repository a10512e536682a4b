"""The `cnnlab` command: a thin shell over the Python API, one small module per command.

Commands are loaded on demand from the COMMANDS table, and command modules import only click at
the top (torch and friends are imported inside each command), so `cnnlab --help` answers instantly.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from cnnlab import __version__
from cnnlab.errors import CnnlabError

# name -> "module:click command". One line per command; keep the order of `cnnlab --help`.
COMMANDS = {
    "train": "cnnlab.cli.train:train_command",
    "lr-find": "cnnlab.cli.lr_find:lr_find_command",
    "evaluate": "cnnlab.cli.evaluate:evaluate_command",
    "predict": "cnnlab.cli.predict:predict_command",
    "track": "cnnlab.cli.track:track_command",
    "export": "cnnlab.cli.export:export_command",
    "tasks": "cnnlab.cli.models:tasks_command",
    "models": "cnnlab.cli.models:models_command",
    "summary": "cnnlab.cli.models:summary_command",
    "datasets": "cnnlab.cli.models:datasets_command",
    "filter": "cnnlab.cli.filter:filter_command",
    "explain-conv": "cnnlab.cli.filter:explain_conv_command",
    "kernels": "cnnlab.cli.filter:kernels_command",
    "augment": "cnnlab.cli.augment:augment_command",
    "explain": "cnnlab.cli.explain:explain_command",
    "report": "cnnlab.cli.explain:report_command",
    "serve": "cnnlab.cli.serve:serve_command",
    "embed": "cnnlab.cli.embed:embed_command",
    "verify": "cnnlab.cli.verify:verify_command",
    "enroll": "cnnlab.cli.enroll:enroll_command",
    "identify": "cnnlab.cli.identify:identify_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """cnnlab: train, evaluate and use convolutional neural networks on your images.

    \b
    Quick start:
      cnnlab train --data fashion-mnist --model guide-cnn --epochs 3 --name demo
      cnnlab evaluate runs/demo
      cnnlab predict runs/demo my-images/ --top-k 3
    """


class _StderrLines(logging.Handler):
    """The library's log records (warnings and notes) as lines on stderr, the stream of the moment
    (click's test runner swaps it), "warning: " in front of a warning that is not a note."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and not message.startswith("note:"):
            message = f"warning: {message}"
        click.echo(message, err=True)


def _show_library_messages() -> None:
    logger = logging.getLogger("cnnlab")
    if not any(isinstance(handler, _StderrLines) for handler in logger.handlers):
        logger.addHandler(_StderrLines(logging.WARNING))


# Warnings from the libraries underneath that say nothing a cnnlab user can act on: (module, message
# pattern, why it is harmless here). Anything else is shown, as one line naming where it comes from.
HARMLESS_WARNINGS = (
    ("torch", r"TypedStorage is deprecated", "PyTorch's own internals, not cnnlab's use"),
    ("torch", r"Using a non-full backward hook when the forward contains multiple autograd Nodes",
     "Grad-CAM reads the gradient at a layer's output, which a non-full hook gives exactly"),
    ("matplotlib", r"Tight layout not applied", "a figure's spacing is left as it was"),
    ("matplotlib", r"No artists with labels found to put in legend", "a plot without a legend to show"),
)


_warnings_shown: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line, like cnnlab's own, naming the library instead of its source
    line; once per run (a training and a validation DataLoader give the same one)."""
    origin = next((name for name in ("torchvision", "torch", "matplotlib", "PIL", "numpy", "cnnlab")
                   if f"/{name}/" in str(filename).replace("\\", "/")), category.__name__)
    text = f"warning: {message} ({origin})"
    if text not in _warnings_shown:
        _warnings_shown.add(text)
        click.echo(text, err=True)


def _route_library_warnings() -> None:
    import warnings

    for module, pattern, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, module=module)
    warnings.showwarning = _show_warning


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; a CnnlabError becomes one clear line on stderr, exit status 2."""
    _show_library_messages()
    _route_library_warnings()
    try:
        cli.main(args=argv, prog_name="cnnlab", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)  # click turns Ctrl-C into Abort
        sys.exit(130)
    except CnnlabError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
