"""The report's embedding section: verification and identification figures, the ROC and the t-SNE map."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.report.html import Section, paragraph, table
from cnnlab.report.sections import evaluation_header, picture
from cnnlab.tasks.base import ReportContext

if TYPE_CHECKING:
    from cnnlab.tasks.embedding.task import Embedding


def embedding_sections(task: "Embedding", context: ReportContext) -> list[Section]:
    metrics, folder = context.evaluation.metrics, context.evaluation.folder
    parts = evaluation_header(context)
    if "eer" in metrics:
        folds = metrics["ten_fold_accuracy"]
        rows = [("TAR at FAR 1e-2", f"{metrics['tar_at_far_1e-2']:.2%}",
                 f"threshold {metrics['threshold_at_far_1e-2']:.4f}"),
                ("TAR at FAR 1e-3", f"{metrics['tar_at_far_1e-3']:.2%}",
                 f"threshold {metrics['threshold_at_far_1e-3']:.4f}"),
                ("equal error rate", f"{metrics['eer']:.2%}", f"threshold {metrics['eer_threshold']:.4f}"),
                ("10-fold accuracy", f"{folds['mean']:.2%}", f"± {folds['std']:.2%} over the folds"),
                ("ROC AUC", f"{metrics['roc_auc']:.4f}", "")]
        for rank in (1, 5):
            if f"rank_{rank}" in metrics:
                rows.append((f"rank-{rank} identification", f"{metrics[f'rank_{rank}']:.2%}",
                             f"{metrics['probe_images']:,} probes, a gallery of {metrics['gallery_images']}"))
        decided = metrics.get("at_model_threshold")
        if decided:
            rows.append(("at the model's own threshold", f"TAR {decided['tar']:.2%}, FAR {decided['far']:.2%}",
                         f"cosine ≥ {decided['threshold']:.4f} (chosen at FAR {task.verify_far:g} on validation "
                         "pairs)"))
        parts.append(table(["measure", "value", "how"], rows, numeric=[False, True, False]))
        parts.append(paragraph(f"{metrics['pairs']:,} pairs ({metrics['genuine_pairs']:,} of one identity, "
                               f"{metrics['impostor_pairs']:,} of two) drawn with a fixed seed from "
                               f"{metrics['images']:,} images of {metrics['identities']} identities. Identities the "
                               "model trained on make this a closed-set score; evaluate on identities it never saw "
                               "(cnnlab evaluate RUN --data other-people/) for the open-set one.", "note"))
    else:
        parts.append(paragraph("Too few identities in this evaluation to form pairs of one and of two identities.",
                               "note"))
    parts.append(picture(folder, "verification_roc.png", "verification ROC"))
    parts.append(paragraph("The embedding space in two dimensions (t-SNE of the cosine distances): each dot an "
                           "image, coloured by its identity. t-SNE keeps neighbours together but not distances "
                           "between clusters.", "note"))
    parts.append(picture(folder, "embedding_map.png", "t-SNE map of the embeddings"))
    return [Section("evaluation", "Evaluation: verification and identification", "\n".join(parts))]
