"""Pairs files (LFW's pairs.txt, CSV a,b,same) and seeded pairs drawn from labels."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import DataError
from cnnlab.tasks.embedding.pairs import draw_pairs, gallery_and_probes, read_pairs


def test_lfw_pairs_txt_parses_with_its_header_and_both_kinds_of_line(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabneh\t1\tDean_Barker\t12\n")
    pairs = read_pairs(tmp_path / "pairs.txt", root=tmp_path / "lfw")
    assert pairs.first == [tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg",
                           tmp_path / "lfw/Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg"]
    assert pairs.second == [tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg",
                            tmp_path / "lfw/Dean_Barker/Dean_Barker_0012.jpg"]
    assert pairs.same.tolist() == [True, False]
    assert len(pairs.files()) == 4


def test_csv_pairs_parse_relative_to_the_csv_with_a_header(tmp_path):
    (tmp_path / "pairs.csv").write_text("a,b,same\nx/1.png,x/2.png,1\ny/1.png,/abs/z.png,false\n")
    pairs = read_pairs(tmp_path / "pairs.csv")
    assert pairs.first == [tmp_path / "x/1.png", tmp_path / "y/1.png"]
    assert [str(p) for p in pairs.second] == [str(tmp_path / "x/2.png"), "/abs/z.png"]
    assert pairs.same.tolist() == [True, False]


@pytest.mark.parametrize("name, text, line, words", [
    ("pairs.txt", "1\nAbel_Pacheco\t1\n", 2, "expected 'NAME N M'"),
    ("pairs.txt", "Abel_Pacheco\t1\t4\nAbel_Pacheco\tone\t4\n", 2, "whole number"),
    ("pairs.csv", "a,b,same\nx.png,y.png\n", 2, "expected 3 columns"),
    ("pairs.csv", "x.png,y.png,1\nx.png,y.png,maybe\n", 2, "1 or 0"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, name, text, line, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as error:
        read_pairs(tmp_path / name)
    assert f"{tmp_path / name}:{line}:" in str(error.value) and words in str(error.value)


def test_drawn_pairs_are_seeded_distinct_and_balanced():
    labels = np.repeat(np.arange(5), 40)
    first, second, same = draw_pairs(labels, 300, seed=1)
    again = draw_pairs(labels, 300, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((first, second, same), again))
    assert same.sum() == 300 and (~same).sum() == 300
    assert np.array_equal(labels[first] == labels[second], same)
    assert (first != second).all() and len(set(zip(first.tolist(), second.tolist()))) == 600
    assert not np.array_equal(draw_pairs(labels, 300, seed=2)[0], first)
    # every genuine pair when there are fewer than asked: 5 identities × C(40, 2)
    assert draw_pairs(labels, 10_000)[2].sum() == 5 * 40 * 39 // 2


def test_gallery_holds_one_image_per_identity_and_the_rest_probe():
    labels = np.array([0, 0, 0, 1, 1, 2])  # identity 2 has one image: nothing to probe it with
    gallery, probes = gallery_and_probes(labels, seed=0)
    assert sorted(labels[gallery].tolist()) == [0, 1]
    assert sorted(np.concatenate([gallery, probes]).tolist()) == [0, 1, 2, 3, 4]


def test_a_face_crop_is_the_square_around_the_box_with_a_margin_clipped_to_the_image():
    from cnnlab.tasks.embedding.faces import square_crop

    pixels = np.arange(100 * 80).reshape(100, 80)  # height 100, width 80
    crop = square_crop(pixels, (30, 40, 50, 50), margin=0.25)  # 20 × 10 box: a 30-pixel square at (40, 45)
    assert crop.shape == (30, 30) and crop[0, 0] == pixels[30, 25]
    assert square_crop(pixels, (0, 0, 40, 40), margin=0.5).shape == (60, 60)  # cut at the top-left corner


def test_the_haar_face_finder_finds_the_astronauts_face_or_says_why_it_cannot(tmp_path):
    from PIL import Image
    from skimage import data

    from cnnlab.tasks.embedding.faces import FaceFinderMissing, haar_face_box

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    try:
        import cv2
    except ImportError:  # OpenCV is optional: the error says what to install
        cv2 = None
    if cv2 is None or not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 dropped the bundled cascades
        with pytest.raises(FaceFinderMissing, match="--detector"):
            haar_face_box(tmp_path / "astronaut.png")
        return
    x1, y1, x2, y2 = haar_face_box(tmp_path / "astronaut.png")
    assert 150 < (x1 + x2) / 2 < 260 and 50 < (y1 + y2) / 2 < 160  # Eileen Collins's face, top middle
