"""Regression: one or more numbers per image, mean squared error loss.

Targets are standardised with the training set's mean and standard deviation, so that an angle
in degrees and a price in euros are learned equally well; the network predicts standardised
values and every reported number (MAE, RMSE, predictions) is converted back to the data's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.tasks.base import Task


class Regression(Task):
    name = "regression"
    headline_name = "mae"
    headline_higher_is_better = False
    loss_name = "MSE of standardised targets"

    def __init__(self, target_names: list[str], mean: list[float], std: list[float]):
        self.target_names = list(target_names)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    @classmethod
    def for_training(cls, source: Any, *, label_smoothing: float = 0.0, class_weights: str = "none") -> "Regression":
        """Take the standardisation from the training Source's targets (N, T). (`label_smoothing`
        and `class_weights` are classification's; `TrainConfig.validate` refuses them here.)"""
        if source.target_names is None:
            raise ConfigError(f"{source.description} has class labels; regression needs numeric targets")
        target_names = source.target_names
        targets = torch.as_tensor(source.targets).double()
        std = targets.std(dim=0) if len(targets) > 1 else torch.ones(targets.shape[1], dtype=torch.double)
        return cls(target_names, targets.mean(dim=0).tolist(), std.clamp_min(1e-8).tolist())

    @property
    def num_outputs(self) -> int:
        return len(self.target_names)

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

    def evaluate(self, outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        predicted = self.decode(outputs.cpu()).double()
        targets = targets.cpu().double()
        errors = predicted - targets
        per_target = {}
        for column, name in enumerate(self.target_names):
            per_target[name] = regression_scores(predicted[:, column], targets[:, column])
        metrics: dict[str, Any] = {
            "images": len(targets),
            "loss": float(F.mse_loss(outputs.cpu().float(), self._standardize(targets.float()))),
            "mae": float(errors.abs().mean()),
            "rmse": float(errors.pow(2).mean().sqrt()),
            "r2": sum(scores["r2"] for scores in per_target.values()) / len(per_target),
            "per_target": per_target,
            "baseline_rmse": float((targets - targets.mean(dim=0)).pow(2).mean().sqrt()),
        }
        return metrics

    def plots(self, metrics: dict[str, Any], outputs: Tensor, targets: Tensor, folder: Path) -> list[Path]:
        from cnnlab.evaluate.plots import plot_regression_scatter

        path = folder / "predicted_vs_true.png"
        predicted = self.decode(outputs.cpu()).numpy()
        plot_regression_scatter(targets.cpu().numpy(), predicted, self.target_names, metrics["per_target"], path)
        return [path]

    def predictions(self, outputs: Tensor, top_k: int = 1) -> list[dict[str, Any]]:
        values = self.decode(outputs).cpu().tolist()
        return [{"values": dict(zip(self.target_names, row))} for row in values]

    def prediction_table(self, outputs: Tensor, targets: Tensor) -> tuple[list[str], list[list[str]]]:
        header = [f"true_{n}" for n in self.target_names] + [f"predicted_{n}" for n in self.target_names]
        predicted = self.decode(outputs).cpu().tolist()
        truths = targets.reshape(len(targets), -1).tolist()
        return header, [[f"{v:.6g}" for v in truth + guess] for truth, guess in zip(truths, predicted)]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "target_names": self.target_names,
                "target_mean": self.mean.tolist(), "target_std": self.std.tolist()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Regression":
        return cls(values["target_names"], values["target_mean"], values["target_std"])

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return f"MAE {metrics['mae']:.4g}  RMSE {metrics['rmse']:.4g}  R² {metrics['r2']:.4f}"


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
