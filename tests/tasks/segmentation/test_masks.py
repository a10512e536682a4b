"""Segmentation data as users bring it: one scene written in every mask format reads to the same class
indices, and every bad mask is refused with its file named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import DataError
from cnnlab.tasks.segmentation.task import Segmentation

CLASSES = ["background", "cat", "dog"]
COLOURS = {"background": [0, 0, 0], "cat": [200, 30, 30], "dog": [30, 30, 200]}


def scene() -> np.ndarray:
    """A 24×32 mask: a cat rectangle, a dog rectangle, a void strip along the dog's left edge."""
    mask = np.zeros((24, 32), np.uint8)
    mask[3:11, 2:12] = 1
    mask[12:22, 16:30] = 2
    mask[12:22, 15] = 255
    return mask


def _image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray((mask.astype(np.int32) * 60 % 256).astype(np.uint8))


def _folder(root: Path, masks: dict[str, Image.Image], classes: object = None, mask_suffix: str = ".png") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in masks.items():
        _image(scene()).save(root / "images" / f"{stem}.png")
        mask.save(root / "masks" / f"{stem}{mask_suffix}")
    if classes is not None:
        import yaml

        (root / "classes.yaml").write_text(yaml.safe_dump(classes, sort_keys=False))
    return root


def _indices(root: Path | str, split: str = "train") -> list[np.ndarray]:
    source = Segmentation.open_data(root, split=split)
    return [source.targets.indices(i) for i in range(len(source))], source


def _rgb(mask: np.ndarray) -> Image.Image:
    table = np.zeros((256, 3), np.uint8)
    for index, name in enumerate(CLASSES):
        table[index] = COLOURS[name]
    table[255] = (255, 255, 255)
    return Image.fromarray(table[mask])


def _palette(mask: np.ndarray) -> Image.Image:
    picture = Image.fromarray(mask, mode="L").convert("P")
    picture.putpalette([0, 0, 0, 200, 30, 30, 30, 30, 200] + [255] * (768 - 9))
    return picture


def test_every_mask_format_reads_to_the_same_class_indices(tmp_path):
    expected = scene()
    layouts = {
        "L": _folder(tmp_path / "l", {"a": Image.fromarray(expected, mode="L")}, CLASSES),
        "P": _folder(tmp_path / "p", {"a": _palette(expected)}, CLASSES),
        "RGB": _folder(tmp_path / "rgb", {"a": _rgb(expected)}, {**COLOURS, "void": [255, 255, 255]}),
    }
    csv_root = _folder(tmp_path / "csv", {"a": Image.fromarray(expected, mode="L")}, CLASSES)
    (csv_root / "pairs.csv").write_text("image,mask\nimages/a.png,masks/a.png\n")
    layouts["CSV"] = csv_root / "pairs.csv"
    layouts["COCO polygons"] = _coco(tmp_path / "coco", expected, rle=False)
    layouts["COCO RLE"] = _coco(tmp_path / "coco-rle", expected, rle=True)
    for kind, root in layouts.items():
        [mask], source = _indices(root)
        assert source.class_names == CLASSES, kind
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected), kind


def _coco(root: Path, mask: np.ndarray, *, rle: bool) -> Path:
    """The scene as COCO: each rectangle an object (a polygon along its pixel edges, or RLE), the void
    strip a crowd region."""
    from pycocotools import mask as coco_mask

    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    _image(mask).save(root / "images" / "train" / "a.png")
    height, width = mask.shape
    annotations = []
    for number, (value, category, crowd) in enumerate([(1, 7, 0), (2, 9, 0), (255, 7, 1)], start=1):
        rows, columns = np.nonzero(mask == value)
        x1, y1, x2, y2 = columns.min(), rows.min(), columns.max() + 1, rows.max() + 1
        if rle or crowd:
            encoded = coco_mask.encode(np.asfortranarray((mask == value).astype(np.uint8)))
            segmentation = {"size": [height, width], "counts": encoded["counts"].decode()}
        else:
            segmentation = [[float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]]
        annotations.append({"id": number, "image_id": 1, "category_id": category, "iscrowd": crowd,
                            "area": float((mask == value).sum()), "segmentation": segmentation,
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    document = {"images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
                "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}], "annotations": annotations}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(document))
    return root


def test_a_polygon_is_rasterised_as_pycocotools_does_along_pixel_edges():
    from pycocotools import mask as coco_mask

    from cnnlab.tasks.segmentation.rle import polygon_to_mask

    square = [2, 3, 10, 3, 10, 9, 2, 9]
    reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([square], 16, 16)))
    assert np.array_equal(polygon_to_mask(square, 16, 16), reference)
    slanted = [2.3, 3.1, 12.7, 5.2, 6.1, 13.8]
    reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([slanted], 16, 16)))
    assert (polygon_to_mask(slanted, 16, 16) != reference).sum() <= 0.05 * reference.sum()  # edge pixels only


def test_split_folders_are_chosen_by_split(tmp_path):
    for split, value in (("train", 1), ("test", 2)):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "masks" / split).mkdir(parents=True)
        mask = np.full((8, 8), value, np.uint8)
        _image(mask).save(tmp_path / "images" / split / f"{split}.png")
        Image.fromarray(mask, mode="L").save(tmp_path / "masks" / split / f"{split}.png")
    assert Segmentation.data_splits(tmp_path) == ("train", "test")
    [mask], source = _indices(tmp_path, "test")
    assert source.names[0].endswith("test.png") and (mask == 2).all()
    assert source.class_names == ["background", "class 1", "class 2"]  # no classes.yaml: 0 .. the largest


def test_a_black_and_white_mask_reads_as_background_and_foreground_with_a_note(tmp_path, caplog):
    binary = np.where(scene() == 1, 255, 0).astype(np.uint8)
    root = _folder(tmp_path, {"a": Image.fromarray(binary, mode="L")})
    with caplog.at_level(logging.WARNING):
        [mask], source = _indices(root)
    assert source.class_names == ["background", "foreground"]
    assert np.array_equal(mask, (binary == 255).astype(np.uint8))
    assert "0 = background and 255 = foreground" in caplog.text


@pytest.mark.parametrize("case", ["size", "jpeg file", "lossy values", "lossy binary", "unknown class",
                                  "unknown colour", "lossy colour"])
def test_each_bad_mask_is_refused_with_its_file_named(tmp_path, case):
    expected = scene()
    suffix, classes = ".png", CLASSES
    if case == "size":
        mask = Image.fromarray(expected[:, :30], mode="L")
        message = "30×24 pixels, but its image"
    elif case == "jpeg file":
        mask, suffix, message = Image.fromarray(expected, mode="L"), ".jpg", "lossy .jpg file"
    elif case == "lossy values":
        mask = _through_jpeg(Image.fromarray(expected * 1, mode="L"))
        message = "values between the class indices"
    elif case == "lossy binary":
        mask, classes = _through_jpeg(Image.fromarray(np.where(expected == 1, 255, 0).astype(np.uint8))), None
        message = "looks lossy"
    elif case == "unknown class":
        wrong = expected.copy()
        wrong[0, 0] = 9
        mask, message = Image.fromarray(wrong, mode="L"), "values 9 are not known classes"
    elif case == "unknown colour":
        painted = np.asarray(_rgb(expected)).copy()
        painted[0, 0] = (0, 255, 0)
        mask, classes, message = Image.fromarray(painted), {**COLOURS, "void": [255] * 3}, "colours (0, 255, 0)"
    else:
        painted = np.asarray(_rgb(expected)).astype(np.int32)
        painted[5, 5] += (-7, 5, 6)
        mask, classes = Image.fromarray(painted.astype(np.uint8)), {**COLOURS, "void": [255] * 3}
        message = "colours between the classes'"
    root = _folder(tmp_path, {"a": mask}, classes, mask_suffix=suffix)
    with pytest.raises(DataError) as raised:
        Segmentation.open_data(root)
    assert message in str(raised.value)
    assert str(root / "masks" / f"a{suffix}") in str(raised.value)


def _through_jpeg(picture: Image.Image) -> Image.Image:
    """The mask as it comes back from being saved as JPEG once (then as PNG: the values stay)."""
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def test_an_rgb_mask_without_a_colour_map_is_refused(tmp_path):
    root = _folder(tmp_path, {"a": _rgb(scene())})
    with pytest.raises(DataError, match="no classes.yaml"):
        Segmentation.open_data(root)
