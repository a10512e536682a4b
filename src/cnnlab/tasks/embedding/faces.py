"""A detection front-end for verification: find the face (or object) in each photo, crop it, embed the crop.

The finder is a cnnlab detection run (`--detector RUN`: its best-scoring box) or, when that is all a
user has, OpenCV's bundled Haar frontal-face cascade (`cv2.data.haarcascades`; opencv-python-headless).
The crop is the box widened by a margin to a square around its centre (faces are embedded with some
context, and a square keeps the face's proportions at the model's square input); it is then fitted to
the model's input size by the same decoding as every other image. Alignment here is that crop and
scale; eye-landmark rotation is left to a dedicated aligner.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError, DataError

MARGIN = 0.2  # of the box's larger side, added on every side


def haar_face_box(path: Path) -> tuple[float, float, float, float]:
    """The largest frontal face OpenCV's Haar cascade finds in `path`, as x1, y1, x2, y2 pixels."""
    try:
        import cv2
    except ImportError:
        raise FaceFinderMissing("finding faces without a detection run needs OpenCV's Haar cascade: "
                                "pip install 'opencv-python-headless<5', or pass --detector with a cnnlab "
                                "detection run") from None

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path}: not an image OpenCV can read")
    cascade = _frontal_face_cascade(cv2)
    faces = cascade.detectMultiScale(cv2.equalizeHist(image), scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        raise DataError(f"{path}: no face found (OpenCV's frontal-face cascade); crop it yourself, or pass "
                        "--detector with a detection run")
    x, y, width, height = max(faces, key=lambda face: face[2] * face[3])
    return float(x), float(y), float(x + width), float(y + height)


def _frontal_face_cascade(cv2: Any) -> Any:
    """OpenCV's bundled Haar cascade; OpenCV 5 dropped it from the main package (a clear error then)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = Path(folder) / "haarcascade_frontalface_default.xml"
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        raise FaceFinderMissing(f"this OpenCV ({cv2.__version__}) bundles no Haar face cascade (OpenCV 5 dropped it): "
                                "pass --detector with a cnnlab detection run, or install opencv-python-headless<5")
    return cv2.CascadeClassifier(str(path))


class FaceFinderMissing(CnnlabError):
    """Neither a detector run nor OpenCV's face cascade is there to find the face with."""


def detector_box(detector: Any, path: Path) -> tuple[float, float, float, float]:
    """The best-scoring box of a cnnlab detection run in `path`, in the file's own pixels."""
    from cnnlab.evaluate.predict import predict

    row = predict(detector, [str(path)])[0]
    objects = row.get("objects") or []
    if "error" in row or not objects:
        raise DataError(f"{path}: {row.get('error') or 'the detector found nothing in it'}")
    return tuple(objects[0]["box"])  # type: ignore[return-value]


def square_crop(pixels: np.ndarray, box: tuple[float, float, float, float], margin: float = MARGIN) -> np.ndarray:
    """The square around the box's centre, its side the box's larger side plus `margin` on each side,
    clipped to the image."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = pixels.shape[:2]
    left, top = max(0, int(round(centre_x - side / 2))), max(0, int(round(centre_y - side / 2)))
    right, bottom = min(width, int(round(centre_x + side / 2))), min(height, int(round(centre_y + side / 2)))
    return pixels[top:bottom, left:right]


def verify_faces(run: Any, first: str | Path, second: str | Path, *, threshold: float | None = None,
                 detector: str | None = None, **load_options: Any) -> Any:
    """`verify` on the face (or the detector's object) cropped out of each photo."""
    from PIL import Image

    from cnnlab.tasks.embedding.search import decide, embed_files, load_embedding_run

    trained = load_embedding_run(run, **load_options)
    finder = None
    if detector is not None:
        from cnnlab.trained import load

        finder = load(detector, device=load_options.get("device", "auto"), runs_dir=load_options.get("runs_dir", "runs"))
    vectors = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-faces-") as work:
        for number, photo in enumerate((Path(first), Path(second))):
            box = detector_box(finder, photo) if finder is not None else haar_face_box(photo)
            with Image.open(photo) as image:
                crop = square_crop(np.asarray(image.convert("RGB")), box)
            cropped = Path(work) / f"{number}.png"
            Image.fromarray(crop).save(cropped)
            embedded = embed_files(trained, [cropped])
            if len(embedded.vectors) != 1:
                raise DataError(f"{photo}: the crop could not be embedded")
            vectors.append(embedded.vectors[0])
    return decide(float(vectors[0] @ vectors[1]), threshold if threshold is not None else trained.task.threshold)
