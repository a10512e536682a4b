"""`--task embedding`: one unit vector per image, near for one identity and far for different ones.

Identities are classes (a class folder = an identity, read as classification reads its data), but the
model is used on identities it never saw: two images are the same identity when the cosine of their
embeddings reaches a threshold. Validation scores pairs of the held-out images (TAR at FAR = 1e-2 is
the headline) and chooses that threshold at `--verify-far`; it is saved with the model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from cnnlab.errors import ConfigError
from cnnlab.tasks.base import ExplainTarget, ReportContext, Task
from cnnlab.tasks.embedding.losses import (DEFAULT_MARGINS, batch_hard_triplet_loss, instance_contrastive_loss,
                                           margin_softmax_loss)
from cnnlab.tasks.embedding.metrics import far_key

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source
    from cnnlab.models.build import Architecture
    from cnnlab.tasks.embedding.meter import EmbeddingMeter

HEADLINE_FAR = 1e-2
# The instance term's temperature: 2 kept the unseen identities' TAR at FAR 1e-2 above raw pixels on
# 5 of 6 seeds, 0.2 (SimCLR's) on none (docs/embeddings.md §5).
CONTRASTIVE_TEMPERATURE = 2.0


class Embedding(Task):
    name = "embedding"
    description = ("a unit vector per image, near for one identity (class) and far for others: verification and "
                   "identification of identities never seen in training")
    headline_name = f"tar_at_far_{far_key(HEADLINE_FAR)}"
    headline_higher_is_better = True
    loss_name = "margin loss"
    settings = frozenset({"embedding_dim", "metric_loss", "margin", "scale", "verify_far", "contrastive",
                          "embedding_head"})
    data_formats = "as classification: a class folder per identity (train/ val/ test/ of them), a CSV, IDX files"

    def __init__(self, identities: list[str], *, embedding_dim: int = 128, metric_loss: str = "arcface",
                 margin: float | None = None, scale: float = 30.0, verify_far: float = 0.01,
                 threshold: float | None = None, contrastive: float = 1.0, head: str = "features"):
        self.identities = list(identities)  # the training identities (the margin layer's rows)
        self.embedding_dim = int(embedding_dim)
        self.metric_loss = metric_loss
        self.margin = float(DEFAULT_MARGINS[metric_loss] if margin is None else margin)
        self.scale = float(scale)
        self.verify_far = float(verify_far)
        self.contrastive = float(contrastive)  # weight of the instance term (two views of each image); 0: none
        self.head = head  # what the embedding layer reads (cnnlab.tasks.embedding.model.EMBEDDING_HEADS)
        # Cosine similarity at or above which two images are one identity: chosen at `verify_far` on the
        # validation pairs after each epoch (the best epoch's is saved), or set with --threshold.
        self.threshold = threshold
        self._margin_layer: Any = None  # the model's margin weights, for the validation loss

    # --- data ---------------------------------------------------------------------------------

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        from cnnlab.data.sources import open_labelled_images

        return open_labelled_images(spec, split=split, data_dir=data_dir)

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Embedding":
        from cnnlab.config import METRIC_LOSSES, TrainConfig

        if source.class_names is None:
            raise ConfigError(f"{source.description} has numeric targets; an embedding learns from identities: "
                              "a class folder per identity")
        config = config or TrainConfig()
        if config.metric_loss not in METRIC_LOSSES:
            raise ConfigError(f"--metric-loss must be one of {', '.join(METRIC_LOSSES)} (got {config.metric_loss!r})")
        if config.embedding_dim < 2:
            raise ConfigError(f"--embedding-dim must be at least 2, e.g. 128 (got {config.embedding_dim})")
        if config.margin is not None and not config.margin >= 0:
            raise ConfigError(f"--margin must be 0 or more (got {config.margin})")
        if not config.scale > 0:
            raise ConfigError(f"--scale must be positive, e.g. 30 (got {config.scale})")
        if not config.contrastive >= 0:
            raise ConfigError(f"--contrastive is the weight of the two-view term, 0 or more, e.g. 1 (got {config.contrastive})")
        if not 0 < config.verify_far < 1:
            raise ConfigError(f"--verify-far is a false accept rate between 0 and 1, e.g. 0.01 (got {config.verify_far})")
        return cls(source.class_names, embedding_dim=config.embedding_dim, metric_loss=config.metric_loss,
                   margin=config.margin, scale=config.scale, verify_far=config.verify_far,
                   contrastive=config.contrastive, head=config.embedding_head)

    # --- model --------------------------------------------------------------------------------

    @property
    def uses_margin_layer(self) -> bool:
        return self.metric_loss != "triplet"

    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        from cnnlab.tasks.embedding.model import embedding_net

        model = embedding_net(architecture, in_channels=in_channels, image_size=image_size,
                              dimensions=self.embedding_dim,
                              identities=len(self.identities) if self.uses_margin_layer else None,
                              head=self.head, views=self.contrastive > 0)
        self._margin_layer = model.margin
        return model

    def describe_outputs(self) -> str:
        branch = (f" (+ {len(self.identities)} identity cosines while training)" if self.uses_margin_layer else "")
        if self.contrastive > 0:
            branch += " (+ a second view's embedding while training)"
        return f"a {self.embedding_dim}-value unit embedding{branch}"

    # --- training -----------------------------------------------------------------------------

    def embeddings(self, outputs: Tensor) -> Tensor:
        """The embeddings (N, D) of outputs in either mode (training adds the cosines after them)."""
        return outputs[:, :self.embedding_dim]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The margin (or triplet) loss, plus in training mode the instance term over the two views."""
        embeddings = self.embeddings(outputs).float()
        training = outputs.shape[1] > self.embedding_dim  # [embedding | cosines | second view's embedding]
        loss = self._identity_loss(outputs, embeddings, targets, training)
        if training and self.contrastive > 0:
            second = outputs[:, -self.embedding_dim:]
            loss = loss + self.contrastive * instance_contrastive_loss(embeddings, second,
                                                                       temperature=CONTRASTIVE_TEMPERATURE)
        return loss

    def _identity_loss(self, outputs: Tensor, embeddings: Tensor, targets: Tensor, training: bool) -> Tensor:
        if not self.uses_margin_layer:
            return batch_hard_triplet_loss(embeddings, targets, margin=self.margin)
        if training:
            cosines = outputs[:, self.embedding_dim:self.embedding_dim + len(self.identities)]
        else:  # evaluation mode (validation): the margin layer's cosines, from its weights
            cosines = self._margin_layer(embeddings) if self._margin_layer is not None else None
            if cosines is None:
                raise ConfigError("this embedding model has no margin layer to score a validation loss with")
        return margin_softmax_loss(cosines, targets, kind=self.metric_loss, margin=self.margin,
                                   scale=self.scale)

    def describe_loss(self) -> str:
        if not self.uses_margin_layer:
            return (f"loss: batch-hard triplet loss, margin {self.margin:g} (the farthest same-identity image must "
                    f"be nearer than the nearest other identity by at least that)")
        penalty = f"cos(θ + {self.margin:g})" if self.metric_loss == "arcface" else f"cos θ − {self.margin:g}"
        return (f"loss: {'ArcFace' if self.metric_loss == 'arcface' else 'CosFace'}: softmax over the "
                f"{len(self.identities)} training identities of {self.scale:g} · cosine, the own identity's "
                f"{penalty}")

    def meter(self, *, full: bool = True) -> "EmbeddingMeter":
        from cnnlab.tasks.embedding.meter import EmbeddingMeter

        return EmbeddingMeter(self, full=full)

    # --- using the model ----------------------------------------------------------------------

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        # The mean of unit vectors is shorter than one: normalised again.
        return torch.nn.functional.normalize(torch.stack([o.float() for o in outputs]).mean(dim=0), dim=1)

    def configure(self, *, threshold: str | None = None, **others: Any) -> None:
        super().configure(**others)
        if threshold is not None:
            try:
                value = float(threshold)
            except ValueError:
                value = float("nan")
            if not -1.0 <= value <= 1.0:
                raise ConfigError(f"--threshold for an embedding is a cosine similarity between -1 and 1, e.g. "
                                  f"0.5 (got {threshold!r})")
            self.threshold = value

    def set_threshold(self, spec: str | None) -> None:
        if spec is not None:
            self.configure(threshold=spec)

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        return [{"embedding": row} for row in self.embeddings(outputs).float().cpu().tolist()]

    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        values = prediction["embedding"]
        return f"{len(values)}-value embedding [{', '.join(f'{v:+.3f}' for v in values[:4])}, …]"

    def caption(self, prediction: dict[str, Any]) -> str:
        return f"{len(prediction['embedding'])}-value embedding"

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        return [f"e{index}" for index in range(self.embedding_dim)]

    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        return [[f"{value:.6f}" for value in prediction["embedding"]]]

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        return ["identity"], [[[str(int(target))]] for target in targets.tolist()]

    def explain_target(self, outputs: Tensor, choice: str | None = None) -> ExplainTarget:
        """Grad-CAM of one embedding value (its largest in magnitude, or `--class N`), sign-adjusted: the
        whole vector has length 1 whatever the image, so its own length explains nothing."""
        embedding = self.embeddings(outputs)[0]
        if choice is None:
            index = int(embedding.abs().argmax())
        elif choice.isdigit() and int(choice) < self.embedding_dim:
            index = int(choice)
        else:
            raise ConfigError(f"--class {choice}: an embedding model explains one of its values: a number from 0 "
                              f"to {self.embedding_dim - 1}")
        sign = 1.0 if float(embedding[index]) >= 0 else -1.0
        return ExplainTarget(f"embedding value {index}", lambda scores: sign * scores[0, index])

    # --- evaluation and report ----------------------------------------------------------------

    def plots(self, metrics: dict[str, Any], meter: "EmbeddingMeter", folder: Path) -> list[Path]:
        from cnnlab.tasks.embedding.plots import plot_embedding_map, plot_roc

        paths = []
        if meter.roc is not None:
            paths.append(plot_roc(meter.roc, metrics, folder / "verification_roc.png"))
        if meter.count >= 3 and importlib.util.find_spec("sklearn") is not None:  # t-SNE: pip install cnnlab[embeddings]
            paths.append(plot_embedding_map(*meter.map_sample(), folder / "embedding_map.png"))
        return paths

    def summary_line(self, metrics: dict[str, Any]) -> str:
        if "eer" not in metrics:
            return f"{metrics.get('images', 0):,} images: too few identities to form pairs"
        text = (f"TAR {metrics['tar_at_far_1e-2']:.2%} at FAR 1e-2, {metrics['tar_at_far_1e-3']:.2%} at FAR 1e-3, "
                f"EER {metrics['eer']:.2%}, 10-fold accuracy {metrics['ten_fold_accuracy']['mean']:.2%}")
        if "rank_1" in metrics:
            text += f", rank-1 {metrics['rank_1']:.2%}"
        decided = metrics.get("at_model_threshold")
        if decided:
            text += (f"; at the model's threshold {decided['threshold']:.3f}: TAR {decided['tar']:.2%}, "
                     f"FAR {decided['far']:.2%}")
        return text + f" ({metrics['pairs']:,} pairs of {metrics['images']:,} images, {metrics['identities']} identities)"

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.tasks.embedding.report import embedding_sections

        return embedding_sections(self, context)

    # --- saved with the model -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "identities": self.identities, "embedding_dim": self.embedding_dim,
                "metric_loss": self.metric_loss, "margin": self.margin, "scale": self.scale,
                "verify_far": self.verify_far, "threshold": self.threshold, "contrastive": self.contrastive,
                "head": self.head}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Embedding":
        threshold = values.get("threshold")
        return cls(list(values["identities"]), embedding_dim=int(values["embedding_dim"]),
                   metric_loss=str(values.get("metric_loss", "arcface")), margin=values.get("margin"),
                   scale=float(values.get("scale", 30.0)), verify_far=float(values.get("verify_far", 0.01)),
                   threshold=None if threshold is None else float(threshold),
                   # runs saved before these existed: no instance term, the classifier's last layer resized
                   contrastive=float(values.get("contrastive", 0.0)), head=str(values.get("head", "penultimate")))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
