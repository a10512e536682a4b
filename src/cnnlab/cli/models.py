"""`cnnlab tasks`, `cnnlab models`, `cnnlab summary` and `cnnlab datasets`: what is available, and
what's inside."""

from __future__ import annotations

import click


@click.command("tasks")
def tasks_command() -> None:
    """List the tasks (--task): what each predicts, its metric, its default model, the data it reads."""
    from cnnlab.config import TrainConfig
    from cnnlab.data.generated import GENERATED
    from cnnlab.data.named import list_datasets
    from cnnlab.tasks import task_class, task_names

    for name in task_names():
        task = task_class(name)
        model = task.defaults.get("model", TrainConfig.model)
        datasets = [entry.name for entry in GENERATED if entry.builder.task == name]
        if name == TrainConfig.task:  # the named datasets are labelled images
            datasets = [entry.name for entry in list_datasets()] + datasets
        click.echo(f"{name}\n  {task.description}\n  metric: {task.headline_name}; default model: {model}\n"
                   f"  data: {task.data_formats}")
        if datasets:
            click.echo(f"  named datasets: {', '.join(datasets)}")


@click.command("models")
@click.argument("task", required=False)
def models_command(task: str | None) -> None:
    """List the registered models, one line each, with the task of those made for one; TASK (e.g.
    detection) lists only the models made for it."""
    from cnnlab.models.registry import list_models

    entries = [entry for entry in list_models() if task is None or entry.metadata.get("task") == task]
    if not entries:
        from cnnlab.errors import ConfigError

        made_for = sorted({entry.metadata["task"] for entry in list_models() if entry.metadata.get("task")})
        raise ConfigError(f"no model is made for the task {task!r}; models made for a task: {', '.join(made_for)} "
                          f"(any model without a task trains for classification and regression)")
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        task = entry.metadata.get("task")
        click.echo(f"{entry.name:<{width}}  {f'[{task}] ' if task else ''}{entry.description}")
    click.echo("\nor a YAML layer list: --model path/to/net.yaml (see examples/guide-cnn.yaml)")


@click.command("summary")
@click.argument("model")
@click.option("--input", "input_shape", default="1,28,28", show_default=True, help="input shape C,H,W")
@click.option("--classes", type=int, default=10, show_default=True, help="number of outputs")
def summary_command(model: str, input_shape: str, classes: int) -> None:
    """Layer table of MODEL (a registered name or a YAML file): output shapes, parameter counts and
    multiply-adds per image."""
    from cnnlab.errors import ConfigError
    from cnnlab.models.build import create_model
    from cnnlab.models.summary import format_summary, summarize

    try:
        channels, height, width = (int(part) for part in input_shape.split(","))
    except ValueError:
        raise ConfigError(f"--input must be C,H,W, e.g. 1,28,28 or 3,224,224 (got {input_shape!r})") from None
    if channels not in (1, 3) or min(height, width) < 1:
        raise ConfigError(f"--input: channels must be 1 or 3 and sizes positive (got {input_shape})")
    network = create_model(model, in_channels=channels, num_outputs=classes, image_size=(height, width))
    click.echo(format_summary(summarize(network, (channels, height, width))))


@click.command("datasets")
def datasets_command() -> None:
    """List the named datasets and where a local copy was found."""
    from cnnlab.data.named import list_datasets, local_copy

    for entry in list_datasets():
        spec = entry.builder
        splits = ", ".join(f"{split} {count:,}" for split, count in spec.split_sizes.items())
        bundled = not any(spec.storage.files(split) for split in spec.splits)
        where = "bundled with its library" if bundled else (local_copy(entry.name) or "none: downloaded on first use")
        click.echo(f"{entry.name:<14} {entry.description}\n{'':<14} splits: {splits}; local copy: {where}")
    from cnnlab.data.generated import GENERATED

    for entry in GENERATED:
        spec = entry.builder
        click.echo(f"{entry.name:<14} {spec.description}\n{'':<14} splits: {', '.join(spec.splits)}; "
                   f"for --task {spec.task}; generated into the dataset cache on first use")
