"""`--resume` of a segmentation run continues to the weights and rows of a run that never stopped:
the masks' augmentation, the pixel loss's parts and mIoU's validation all come back from the state."""

from __future__ import annotations

import csv

import torch

import cnnlab
from tests.conftest import requires_fashion_mnist

pytestmark = requires_fashion_mnist

RUN = dict(task="segmentation", model="unet-small", limit=48, epochs=2, batch_size=16, seed=3, quiet=True)


class _StopAfterOneEpoch:
    def on_epoch_end(self, state, row):
        state.stop_reason = "stopped to be resumed"


def _rows(run) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:  # the seconds and images/s differ between runs
        return [{key: value for key, value in row.items() if "second" not in key and "_per_s" not in key}
                for row in csv.DictReader(handle)]


def test_resume_gives_the_weights_and_rows_of_an_uninterrupted_run(mask_canvases, tmp_path):
    straight = cnnlab.train(data=str(mask_canvases), runs_dir=str(tmp_path), name="straight", **RUN)
    stopped = cnnlab.train(data=str(mask_canvases), runs_dir=str(tmp_path), name="stopped",
                           callbacks=[_StopAfterOneEpoch()], **RUN)
    assert [row["epoch"] for row in stopped.history] == [1]
    resumed = cnnlab.train(resume=stopped.run_dir, quiet=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]

    rows = _rows(resumed.run_dir)
    assert len(rows) == 2 and {"val_miou", "train_loss_ce", "train_loss_dice"} <= set(rows[0])
    assert rows == _rows(straight.run_dir)
    from safetensors.torch import load_file

    weights = load_file(resumed.run_dir / "weights" / "last.safetensors")
    expected = load_file(straight.run_dir / "weights" / "last.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
