"""Regression: one or more numbers per image, mean squared error loss.

Targets are standardised with the training set's mean and standard deviation, so that an angle
in degrees and a price in euros are learned equally well; the network predicts standardised
values and every reported number (MAE, RMSE, predictions) is converted back to the data's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.errors import ConfigError, DataError
from cnnlab.processes import gather_across_processes
from cnnlab.tasks.base import ReportContext
from cnnlab.tasks.vector import SumMeter, VectorTask

if TYPE_CHECKING:
    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source


class Regression(VectorTask):
    name = "regression"
    description = "one or more numbers per image: mean squared error"
    headline_name = "mae"
    headline_higher_is_better = False
    data_formats = "a CSV of file,value[,value...] with a header naming the targets"
    loss_name = "MSE of standardised targets"
    output_kind = "target"

    def __init__(self, target_names: list[str], mean: list[float], std: list[float]):
        self.target_names = list(target_names)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        """A CSV of path,target[,target...] rows: the only layout that gives images numbers."""
        from cnnlab.data import named
        from cnnlab.data.sources import not_found, open_value_csv

        text = str(spec)
        path = Path(text).expanduser()
        if path.is_file() and path.suffix.lower() == ".csv":
            return open_value_csv(path)
        if path.is_dir():
            raise DataError(f"--data {text}: a folder gives class labels (one sub-folder per class); regression "
                            "needs numeric targets from a CSV of path,target[,target...] rows, e.g. "
                            f"--data labels.csv with lines like {text.rstrip('/')}/img001.png,4.2")
        if path.exists() or named.is_named(text):
            what = f"the named dataset {text}" if not path.exists() else f"{text}"
            raise DataError(f"--data {text}: {what} has class labels; regression needs numeric targets from a CSV "
                            "of path,target[,target...]")
        raise not_found(text)

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Regression":
        """Take the standardisation from the training Source's targets (N, T)."""
        if source.target_names is None:
            raise ConfigError(f"{source.description} has class labels; regression needs numeric targets")
        targets = torch.as_tensor(source.targets).double()
        std = targets.std(dim=0) if len(targets) > 1 else torch.ones(targets.shape[1], dtype=torch.double)
        return cls(source.target_names, targets.mean(dim=0).tolist(), std.clamp_min(1e-8).tolist())

    @property
    def num_outputs(self) -> int:
        return len(self.target_names)

    @property
    def output_names(self) -> list[str]:
        return self.target_names

    def describe_outputs(self) -> str:
        return f"{self.num_outputs} value{'' if self.num_outputs == 1 else 's'}"

    def _standardize(self, targets: Tensor) -> Tensor:
        return (targets - self.mean.to(targets.device)) / self.std.to(targets.device)

    def decode(self, outputs: Tensor) -> Tensor:
        """Network outputs (standardised) -> values in the data's units."""
        return outputs.float() * self.std.to(outputs.device) + self.mean.to(outputs.device)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs.float(), self._standardize(targets))

    def describe_loss(self) -> str:
        # The loss and the MAE beside it are on different scales; say so before a user compares them.
        spreads = ", ".join(f"{name}: mean {mean:.4g}, std {std:.4g}" for name, mean, std
                            in zip(self.target_names, self.mean.tolist(), self.std.tolist()))
        return ("loss: mean squared error of the targets standardised with the training images' "
                f"mean and std ({spreads}); always predicting the mean scores about 1.0. mae is in the data's units")

    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        # Mean absolute error over targets, per image, in the data's units.
        return (self.decode(outputs) - targets).abs().mean(dim=1).sum()

    def meter(self, *, full: bool = True) -> "RegressionMeter":
        return RegressionMeter(self, full=full)

    def evaluate(self, outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        """Every metric for outputs (N, T) and targets (N, T): MAE, RMSE and R², overall and per target."""
        predicted = self.decode(outputs.cpu()).double()
        targets = targets.cpu().double()
        errors = predicted - targets
        per_target = {name: regression_scores(predicted[:, column], targets[:, column])
                      for column, name in enumerate(self.target_names)}
        return {
            "images": len(targets),
            "loss": float(F.mse_loss(outputs.cpu().float(), self._standardize(targets.float()))),
            "mae": float(errors.abs().mean()),
            "rmse": float(errors.pow(2).mean().sqrt()),
            "r2": sum(scores["r2"] for scores in per_target.values()) / len(per_target),
            "per_target": per_target,
            "baseline_rmse": float((targets - targets.mean(dim=0)).pow(2).mean().sqrt()),
        }

    def plots(self, metrics: dict[str, Any], meter: "RegressionMeter", folder: Path) -> list[Path]:
        from cnnlab.evaluate.plots import plot_regression_scatter

        path = folder / "predicted_vs_true.png"
        outputs, targets = meter.kept()
        predicted = self.decode(outputs).numpy()
        plot_regression_scatter(targets.numpy(), predicted, self.target_names, metrics["per_target"], path)
        return [path]

    def check_top_k(self, top_k: int) -> None:
        if top_k != 1:
            raise ConfigError(f"--top-k {top_k}: a regression model predicts values, not ranked classes; "
                              "leave --top-k out")

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        values = self.decode(outputs).cpu().tolist()
        return [{"values": dict(zip(self.target_names, row))} for row in values]

    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        return "  ".join(f"{name} = {value:.4g}" for name, value in prediction["values"].items())

    def caption(self, prediction: dict[str, Any]) -> str:
        return ", ".join(f"{name} = {value:.4g}" for name, value in prediction["values"].items())

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        return list(self.target_names)

    def csv_cells(self, prediction: dict[str, Any], columns: list[str]) -> list[str]:
        return [f"{prediction['values'][name]:.6g}" for name in columns]

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        header = [f"true_{n}" for n in self.target_names] + [f"predicted_{n}" for n in self.target_names]
        predicted = self.decode(outputs).cpu().tolist()
        truths = targets.reshape(len(targets), -1).tolist()
        return header, [[[f"{v:.6g}" for v in truth + guess]] for truth, guess in zip(truths, predicted)]

    def summary_line(self, metrics: dict[str, Any]) -> str:
        images = metrics["images"]
        return (f"MAE {metrics['mae']:.4g}, RMSE {metrics['rmse']:.4g}, R² {metrics['r2']:.4f} on "
                f"{images:,} image{'' if images == 1 else 's'}")

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.report.sections import regression_sections

        return regression_sections(self, context)

    def target_caption(self, source: "Source", index: int) -> str:
        return ", ".join(f"{value:.3g}" for value in source.targets[index])

    def training_targets_table(self) -> tuple[list[str], list[list[str]]]:
        rows = [[name, f"{mean:.4g}", f"{std:.4g}"]
                for name, mean, std in zip(self.target_names, self.mean.tolist(), self.std.tolist())]
        return ["target", "mean (training)", "standard deviation"], rows

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "target_names": self.target_names,
                "target_mean": self.mean.tolist(), "target_std": self.std.tolist()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Regression":
        return cls(values["target_names"], values["target_mean"], values["target_std"])


class RegressionMeter:
    """`full=False`: the MAE as running sums; `full=True`: every metric and the scatter plot's points
    (one row of T values per image: predictions and targets, no images)."""

    def __init__(self, task: Regression, *, full: bool):
        self.task, self.full = task, full
        self._sums = SumMeter(["images", "absolute_error"])
        self._outputs: list[Tensor] = []
        self._targets: list[Tensor] = []

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        if not self.full:
            count = torch.tensor(float(len(targets)), device=outputs.device)
            self._sums.add(count, self.task.headline_sum(outputs, targets))
            return
        self._outputs.append(outputs.float().cpu())
        self._targets.append(targets.float().cpu())

    def kept(self) -> tuple[Tensor, Tensor]:
        parts = gather_across_processes((self._outputs, self._targets))
        outputs = [tensor for mine, _ in parts for tensor in mine]
        targets = [tensor for _, mine in parts for tensor in mine]
        width = self.task.num_outputs
        return (torch.cat(outputs) if outputs else torch.empty(0, width),
                torch.cat(targets) if targets else torch.empty(0, width))

    def compute(self) -> dict[str, Any]:
        if not self.full:
            totals = self._sums.totals()
            images = int(totals["images"])
            return {"images": images, "mae": totals["absolute_error"] / images if images else float("nan")}
        return self.task.evaluate(*self.kept())


def regression_scores(predicted: Tensor, true: Tensor) -> dict[str, float]:
    """MAE, RMSE and R² (1 - residual sum of squares / total sum of squares) for one target."""
    errors = predicted - true
    total = (true - true.mean()).pow(2).sum()
    residual = errors.pow(2).sum()
    return {
        "mae": float(errors.abs().mean()),
        "rmse": float(errors.pow(2).mean().sqrt()),
        "r2": float(1 - residual / total) if total > 0 else float("nan"),
    }
