"""Using an embedding run: embed files, verify two images, enroll a gallery, identify a probe.

Search is exact: the probe's cosine to every enrolled vector is one matrix product in torch (100,000
vectors of 128 values answer in milliseconds on 2 cores: benchmarks/embedding_open_set.py). Beyond a few
million vectors, or many probes a second, an approximate index (FAISS, hnswlib) answers faster at a
small loss of recall: docs/embeddings.md.

Privacy: an index holds vectors and identity names only, never images, and nothing leaves the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.errors import CnnlabError, ConfigError, DataError

INDEX_FORMAT = "cnnlab-embedding-index-1"


@dataclass
class Embedded:
    """Embeddings of files: `names[i]` has `vectors[i]`; files that could not be read in `errors`."""

    names: list[str]
    vectors: np.ndarray  # (N, D) float32, unit rows
    errors: dict[str, str]


def load_embedding_run(run: Any, **load_options: Any) -> Any:
    from cnnlab.trained import InferenceModel, load

    # a run loaded already, or an exported file's model (`cnnlab export`), which embeds alike
    trained = run if isinstance(run, InferenceModel) else load(run, **load_options)
    if trained.task.name != "embedding":
        raise ConfigError(f"{trained.checkpoint}: a {trained.task.name} model; embed, verify, enroll and identify "
                          "need a run trained with --task embedding")
    return trained


def embed_files(run: Any, paths: Sequence[str | Path], *, batch_size: int = 256, workers: int | None = None,
                **load_options: Any) -> Embedded:
    """The embedding of every image in `paths` (files, folders, globs), with `run`'s best model
    (`load_options`: device, precision, runs_dir, as `cnnlab.load` takes them)."""
    from cnnlab.evaluate.predict import predict

    trained = load_embedding_run(run, **load_options)
    rows = predict(trained, [str(path) for path in paths], batch_size=batch_size, workers=workers)
    good = [row for row in rows if "embedding" in row]
    vectors = (np.array([row["embedding"] for row in good], dtype=np.float32) if good
               else np.zeros((0, trained.task.embedding_dim), np.float32))
    return Embedded([row["file"] for row in good], vectors,
                    {row["file"]: row["error"] for row in rows if "error" in row})


def write_embeddings(embedded: Embedded, output: str | Path) -> list[Path]:
    """.npy (with the file names in a .csv beside it, row for row) or .parquet (a column of names and one
    of vectors; needs pyarrow)."""
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"--output {output}: Parquet needs pyarrow (pip install pyarrow); or write .npy, "
                              "which saves the file names in a .csv beside it") from None
        table = pa.table({"file": embedded.names, "embedding": [list(row) for row in embedded.vectors]})
        pq.write_table(table, output)
        return [output]
    if suffix != ".npy":
        raise ConfigError(f"--output {output}: write .npy (names in a .csv beside it) or .parquet")
    import csv

    np.save(output, embedded.vectors)
    names = output.with_suffix(".csv")
    with names.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "file"])
        writer.writerows(enumerate(embedded.names))
    return [output, names]


def _embed_one(trained: Any, path: str | Path) -> np.ndarray:
    """The embedding of one image file, on one CPU thread.

    Why one: a single small image gives each of PyTorch's intra-op threads a sliver of work, and they
    meet at a barrier after every layer; on a busy machine one of them is often descheduled and the
    others spin waiting for it. Measured on 2 shared cores (load average ~9, guide-cnn, 28×28):
    embedding one probe took a median 250–300 ms on 2 threads and 2 ms on one; the search over the
    gallery (a large matrix product) keeps every thread."""
    import torch

    from cnnlab.device import intra_op_threads

    on_cpu = getattr(getattr(trained, "device", None), "type", "cpu") == "cpu"
    with intra_op_threads(1) if on_cpu and torch.get_num_threads() > 1 else _no_change():
        return _one_vector(embed_files(trained, [path]), path)


def _no_change() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _one_vector(embedded: Embedded, path: str | Path) -> np.ndarray:
    if embedded.errors or len(embedded.vectors) != 1:
        reason = "; ".join(f"{name}: {error}" for name, error in embedded.errors.items()) or "not one image"
        raise DataError(f"{path}: cannot embed it ({reason})")
    return embedded.vectors[0]


@dataclass
class Verdict:
    similarity: float
    threshold: float | None
    same: bool | None  # None where the model has no threshold

    def describe(self) -> str:
        if self.threshold is None:
            return f"similarity {self.similarity:.4f} (the model has no threshold: pass --threshold)"
        answer = "same identity" if self.same else "different identities"
        return f"similarity {self.similarity:.4f}, threshold {self.threshold:.4f}: {answer}"


def verify(run: Any, first: str | Path, second: str | Path, *, threshold: float | None = None,
           **load_options: Any) -> Verdict:
    """Whether two image files show one identity: their cosine similarity against `threshold` (default:
    the threshold saved with the model, chosen on its validation pairs)."""
    trained = load_embedding_run(run, **load_options)
    one, two = _embed_one(trained, first), _embed_one(trained, second)
    return decide(float(one @ two), threshold if threshold is not None else trained.task.threshold)


def decide(similarity: float, threshold: float | None) -> Verdict:
    return Verdict(similarity, threshold, None if threshold is None else similarity >= threshold)


def verify_pairs(run: Any, pairs_file: str | Path, *, root: str | Path | None = None,
                 threshold: float | None = None, batch_size: int = 256, **load_options: Any) -> dict[str, Any]:
    """Verification metrics over the pairs of a pairs file (LFW's pairs.txt, or a CSV a,b,same): TAR at
    FAR 1e-2 and 1e-3, EER, 10-fold accuracy (in the file's order, as LFW's folds are), and what the
    model's threshold (or `threshold`) decides."""
    from cnnlab.tasks.embedding.metrics import verification_metrics
    from cnnlab.tasks.embedding.pairs import read_pairs

    pairs = read_pairs(pairs_file, root)
    trained = load_embedding_run(run, **load_options)
    files = pairs.files()
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise DataError(f"{pairs_file}: {len(missing)} image(s) it names are not there, e.g. {missing[0]} (pass "
                        "--images-root with the folder they are under)")
    embedded = embed_files(trained, files, batch_size=batch_size)
    if embedded.errors:
        name, error = next(iter(embedded.errors.items()))
        raise DataError(f"{pairs_file}: {len(embedded.errors)} image(s) could not be read, e.g. {name}: {error}")
    row = {name: index for index, name in enumerate(embedded.names)}
    first = embedded.vectors[[row[str(path)] for path in pairs.first]]
    second = embedded.vectors[[row[str(path)] for path in pairs.second]]
    scores = np.einsum("nd,nd->n", first, second).astype(np.float64)
    limit = threshold if threshold is not None else trained.task.threshold
    return {"pairs_file": str(pairs_file), **verification_metrics(scores, pairs.same, threshold=limit)}


# --- enrolment and search ---------------------------------------------------------------------------

@dataclass
class Index:
    """Enrolled vectors (N, D) with the identity of each: `identities[labels[i]]` is vector i's."""

    vectors: np.ndarray
    labels: np.ndarray
    identities: list[str]
    checkpoint: str = ""

    def __post_init__(self) -> None:
        # Once, here, rather than per probe in `search`: over 100,000 vectors a float64 or strided
        # array would be converted (copied, 51+ MB) on every query, which costs ten times the search.
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64)
        if self.vectors.ndim != 2 or self.labels.shape != (len(self.vectors),):
            raise DataError(f"an index needs vectors (N, D) and one label each; got {self.vectors.shape} "
                            f"and {self.labels.shape}")

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        if path.suffix.lower() != ".npz":
            raise ConfigError(f"--output {path}: an index is a .npz file")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, format=np.array(INDEX_FORMAT), vectors=self.vectors.astype(np.float32),
                 labels=self.labels.astype(np.int64), identities=np.array(self.identities),
                 checkpoint=np.array(self.checkpoint))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        path = Path(path).expanduser()
        try:
            with np.load(path, allow_pickle=False) as saved:
                if str(saved["format"]) != INDEX_FORMAT:
                    raise DataError(f"{path}: not a cnnlab embedding index (format {saved['format']})")
                return cls(saved["vectors"], saved["labels"], [str(n) for n in saved["identities"]],
                           str(saved["checkpoint"]))
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"{path}: not a cnnlab embedding index written by `cnnlab enroll` ({error})") from None


def enroll(run: Any, gallery: str | Path, *, batch_size: int = 256, **load_options: Any) -> Index:
    """An index of every image in `gallery`'s identity folders (GALLERY/NAME/*.jpg): vectors and names."""
    folder = Path(gallery).expanduser()
    people = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    if not people:
        raise DataError(f"{folder}: enroll needs a folder with one sub-folder of images per identity")
    trained = load_embedding_run(run, **load_options)
    vectors, labels, skipped = [], [], []
    for label, person in enumerate(people):
        embedded = embed_files(trained, [person], batch_size=batch_size)
        vectors.append(embedded.vectors)
        labels += [label] * len(embedded.vectors)
        skipped += list(embedded.errors)
    if not labels:
        raise DataError(f"{folder}: no image could be embedded ({'; '.join(skipped[:3])})")
    return Index(np.concatenate(vectors), np.array(labels), [person.name for person in people],
                 str(trained.checkpoint))


def search(index: Index, queries: Any, top_k: int = 5) -> tuple[Any, Any]:
    """(scores, identity numbers), each (Q, k): per query the k identities with the most similar enrolled
    vector, best first; exact, in torch (a matrix product, then each identity's best)."""
    import torch

    vectors = torch.as_tensor(index.vectors, dtype=torch.float32)
    labels = torch.as_tensor(index.labels, dtype=torch.int64)
    queries = torch.as_tensor(np.asarray(queries, dtype=np.float32)).reshape(-1, vectors.shape[1])
    similarity = queries @ vectors.T  # (Q, N)
    per_identity = torch.full((len(queries), len(index.identities)), -2.0)
    per_identity.scatter_reduce_(1, labels.expand(len(queries), -1), similarity, reduce="amax")
    return torch.topk(per_identity, k=min(top_k, len(index.identities)), dim=1)


def identify(run: Any, index: Index | str | Path, probe: str | Path, *, top_k: int = 5,
             threshold: float | None = None, **load_options: Any) -> dict[str, Any]:
    """The `top_k` enrolled identities most like `probe`, with scores; the answer is the best of them, or
    "unknown" when its score is below `threshold` (default: the model's)."""
    trained = load_embedding_run(run, **load_options)
    index = index if isinstance(index, Index) else Index.load(index)
    if index.vectors.shape[1] != trained.task.embedding_dim:
        raise CnnlabError(f"the index holds {index.vectors.shape[1]}-value vectors but the model makes "
                          f"{trained.task.embedding_dim}: enroll the gallery again with this run")
    vector = _embed_one(trained, probe)
    scores, found = search(index, vector[None], top_k)
    ranked = [{"identity": index.identities[int(i)], "score": float(s)} for s, i in zip(scores[0], found[0])]
    limit = threshold if threshold is not None else trained.task.threshold
    known = limit is None or ranked[0]["score"] >= limit
    return {"file": str(probe), "answer": ranked[0]["identity"] if known else "unknown", "threshold": limit,
            "top_k": ranked}
