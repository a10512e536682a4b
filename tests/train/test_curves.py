"""training_curves.png: what each axis says."""

from __future__ import annotations

from cnnlab.tasks.classification import Classification
from cnnlab.tasks.regression import Regression
from cnnlab.train.curves import training_curves_figure

HISTORY = [{"epoch": 1, "train_loss": 1.2, "val_loss": 1.0, "train_mae": 3.0, "val_mae": 2.5},
           {"epoch": 2, "train_loss": 0.6, "val_loss": 0.7, "train_mae": 2.0, "val_mae": 2.2}]


def test_the_loss_axis_names_the_loss_and_the_other_the_metric():
    figure = training_curves_figure(HISTORY, "mae", best_epoch=1, loss_name=Regression.loss_name)
    loss, mae = figure.axes
    assert loss.get_ylabel() == "loss (MSE of standardised targets)" and mae.get_ylabel() == "MAE"
    assert [list(line.get_ydata()) for line in loss.lines[:2]] == [[1.2, 0.6], [1.0, 0.7]]
    assert training_curves_figure(HISTORY, "mae", loss_name=Classification.loss_name).axes[0].get_ylabel() == \
        "loss (cross-entropy)"
