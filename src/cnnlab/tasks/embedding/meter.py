"""The embedding task's meter: keeps the embeddings (N × D floats: pairs need them all), then scores seeded
pairs of them (verification) and a gallery/probe split (identification) once, over every process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from cnnlab.tasks.embedding.metrics import Roc, identification_ranks, roc_curve, tar_at_far, verification_metrics
from cnnlab.tasks.embedding.pairs import draw_pairs, gallery_and_probes

if TYPE_CHECKING:
    from cnnlab.tasks.embedding.task import Embedding

PAIRS_PER_KIND = 3000  # genuine and impostor pairs each: FAR 1e-3 is then 3 impostors accepted
MAP_POINTS = 600  # the 2-D map shows this many images at most (t-SNE's time grows with them)


class EmbeddingMeter:
    def __init__(self, task: "Embedding", *, full: bool = True):
        self.task, self.full = task, full
        self._embeddings: list[Tensor] = []
        self._labels: list[Tensor] = []
        self.embeddings = np.zeros((0, task.embedding_dim), dtype=np.float32)
        self.labels = np.zeros(0, dtype=np.int64)
        self.roc: Roc | None = None

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        self._embeddings.append(self.task.embeddings(outputs).detach().float())
        self._labels.append(targets.detach())

    @property
    def count(self) -> int:
        return len(self.labels)

    def compute(self) -> dict[str, Any]:
        from cnnlab.processes import gather_across_processes

        mine = (np.concatenate([e.cpu().numpy() for e in self._embeddings]) if self._embeddings
                else self.embeddings, np.concatenate([t.cpu().numpy() for t in self._labels]).astype(np.int64)
                if self._labels else self.labels)
        gathered = gather_across_processes(mine)
        self.embeddings = np.concatenate([e for e, _ in gathered]).astype(np.float32)
        self.labels = np.concatenate([t for _, t in gathered])
        metrics = pair_metrics(self.embeddings, self.labels, threshold=self.task.threshold if self.full else None)
        self.roc = metrics.pop("_roc", None)
        if not self.full and self.roc is not None:
            # Validation chooses the model's threshold (saved with each checkpoint, so the best epoch's).
            self.task.threshold = tar_at_far(self.roc, self.task.verify_far)[1]
        return metrics

    def map_sample(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to MAP_POINTS embeddings and their labels, the same share of each identity (seeded)."""
        if self.count <= MAP_POINTS:
            return self.embeddings, self.labels
        chosen = np.sort(np.random.default_rng(seed).choice(self.count, size=MAP_POINTS, replace=False))
        return self.embeddings[chosen], self.labels[chosen]


def pair_metrics(embeddings: np.ndarray, labels: np.ndarray, *, threshold: float | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Verification on seeded pairs of these (unit) embeddings and rank-1/5 identification, with the
    ROC under "_roc"; just the counts where there are not two identities with pairs."""
    metrics: dict[str, Any] = {"images": int(len(labels)), "identities": int(len(np.unique(labels)))}
    first, second, same = draw_pairs(labels, PAIRS_PER_KIND, seed=seed) if len(labels) >= 2 else ([], [], [])
    if not len(same) or np.all(same) or not np.any(same):
        return metrics
    scores = np.einsum("nd,nd->n", embeddings[first], embeddings[second]).astype(np.float64)
    metrics.update(verification_metrics(scores, same, threshold=threshold))
    metrics["_roc"] = roc_curve(scores, same)
    gallery, probes = gallery_and_probes(labels, seed=seed)
    if len(probes):
        similarity = embeddings[probes] @ embeddings[gallery].T
        metrics.update(identification_ranks(similarity, labels[probes], labels[gallery]))
        metrics.update(gallery_images=int(len(gallery)), probe_images=int(len(probes)))
    return metrics
