"""The embedding task's pictures: the verification ROC, and a 2-D map of the embedding space (t-SNE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.plotting import new_figure, save_figure
from cnnlab.tasks.embedding.metrics import Roc


def plot_roc(roc: Roc, metrics: dict[str, Any], path: Path) -> Path:
    """TAR against FAR on a log FAR axis (where verification is judged), the operating points marked."""
    figure = new_figure(6.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    shown = roc.far > 0
    axes.plot(roc.far[shown], roc.tar[shown], color="C0", linewidth=1.5,
              label=f"ROC (AUC {metrics['roc_auc']:.3f})")
    for index, key in enumerate(("1e-2", "1e-3")):
        far = float(key)
        axes.plot([far], [metrics[f"tar_at_far_{key}"]], "o", color=f"C{index + 1}", markeredgecolor="black",
                  label=f"FAR {key}: TAR {metrics[f'tar_at_far_{key}']:.1%}")
    decided = metrics.get("at_model_threshold")
    if decided and decided["far"] > 0:
        axes.plot([decided["far"]], [decided["tar"]], "s", color="C3", markeredgecolor="black",
                  label=f"model's threshold {decided['threshold']:.3f}")
    axes.set_xscale("log")
    axes.set_xlim(max(1e-4, 0.5 / max(metrics["impostor_pairs"], 1)), 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (impostor pairs accepted)")
    axes.set_ylabel("true accept rate (genuine pairs accepted)")
    axes.set_title(f"Verification ROC: {metrics['genuine_pairs']:,} genuine, {metrics['impostor_pairs']:,} "
                   f"impostor pairs; EER {metrics['eer']:.1%}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return save_figure(figure, path)


def embedding_map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE coordinates of the embeddings (cosine distance, as they are compared), seeded."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(embeddings) - 1) / 3)))
    return TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed,
                max_iter=500).fit_transform(embeddings.astype(np.float64))


def plot_embedding_map(embeddings: np.ndarray, labels: np.ndarray, path: Path,
                       names: list[str] | None = None) -> Path:
    points = embedding_map(embeddings)
    figure = new_figure(6.5, 5.5)
    axes = figure.add_subplot(1, 1, 1)
    identities = np.unique(labels)
    for index, identity in enumerate(identities):
        here = labels == identity
        name = names[int(identity)] if names and int(identity) < len(names) else f"identity {int(identity)}"
        axes.scatter(points[here, 0], points[here, 1], s=9, color=f"C{index % 10}",
                     marker="os^vD<>"[index // 10 % 7], label=name if len(identities) <= 20 else None)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"t-SNE map of {len(labels):,} embeddings, coloured by identity: one cluster each is what "
                   "a good embedding gives", fontsize=9)
    if len(identities) <= 20:
        axes.legend(fontsize=7, markerscale=1.5, loc="best")
    return save_figure(figure, path)
