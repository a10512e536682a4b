"""`cnnlab report`: one self-contained HTML page per run, checked by parsing it and by opening it in
headless Chromium (every image decoded, no console errors, every section there)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.report.chromium import CHROMIUM, check_page
from tests.helpers import run_cli

SECTIONS = ["config", "model", "data", "training", "evaluation", "mistakes", "filters", "feature-maps"]
requires_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                       reason="Chromium not installed: apt-get install chromium")


class _Resources(HTMLParser):
    """Every src/href in the page, and the number of <script> elements."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def _check_self_contained(html: str) -> None:
    parser = _Resources()
    parser.feed(html)
    assert parser.scripts == 0
    assert parser.links and all(link.startswith(("data:image/png;base64,", "#")) for link in parser.links)
    assert not re.search(r"url\(|@import|https?://", html.split("<body>")[0])  # the style loads nothing


@pytest.fixture(scope="module")
def guide_report(guide_run, tmp_path_factory) -> Path:
    outcome = run_cli("report", guide_run, "--limit", 600, "--mistakes", 4)
    assert outcome.exit_code == 0, outcome.stderr
    assert "no evaluation in the run folder yet: evaluating now" in outcome.stderr
    return guide_run / "report.html"


def test_guide_report_has_every_section_and_is_self_contained(guide_report, guide_run):
    html = guide_report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    _check_self_contained(html)
    assert "fashion-mnist/test/" in html  # the mistakes are named
    assert html.count('<div class="card">') == 4
    assert "Sandal" in html and "accuracy" in html
    assert (guide_run / "eval-fashion-mnist-test" / "predictions.csv").is_file()
    # the model section: guide-cnn's layer table and where its arithmetic is (as `cnnlab summary`)
    assert "guide-cnn: 93,322 parameters (93,322 trainable), 2,794,240 multiply-adds per 1×28×28 image." in html
    assert "The convolutions hold 59.7% of the parameters and do 98.7% of the multiply-adds" in html
    assert '<td>features.conv2</td><td>Conv2d</td><td>64×11×11</td><td class="number">18,496</td>' \
           '<td class="number">2,230,272</td>' in html


@requires_chromium
def test_guide_report_opens_in_chromium(guide_report):
    page = check_page(guide_report)
    assert page.console_errors == []
    assert page.sections == SECTIONS
    assert page.title.startswith("cnnlab report: ")
    assert len(page.images) >= 4 + 1 + 1 + 1 + 5  # mistakes, samples, curves, filters, feature maps...
    broken = [image["alt"] for image in page.images if not (image["complete"] and image["width"] > 0)]
    assert broken == []


@requires_chromium
def test_the_chromium_check_sees_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body><section id="a">'
                    '<img alt="broken" src="data:image/png;base64,AAAA"></section>'
                    '<script>console.error("boom")</script></body></html>')
    checked = check_page(page)
    assert checked.images == [{"alt": "broken", "complete": True, "width": 0}]
    assert "boom" in checked.console_errors and checked.sections == ["a"]


def test_a_second_report_reuses_the_evaluation(guide_report, guide_run, tmp_path):
    outcome = run_cli("report", guide_run, "-o", tmp_path / "again.html", "--samples", 1, "--mistakes", 1,
                      "--max-maps", 4)
    assert outcome.exit_code == 0, outcome.stderr
    assert "using the evaluation in" in outcome.stderr
    assert (tmp_path / "again.html").stat().st_size > 50_000


@pytest.fixture(scope="module")
def resnet_report(resnet_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "resnet.html"
    outcome = run_cli("report", resnet_run, "--limit", 200, "-o", path, "--max-maps", 16, "--mistakes", 3)
    assert outcome.exit_code == 0, outcome.stderr
    return path


def test_resnet18_report(resnet_report):
    html = resnet_report.read_text(encoding="utf-8")
    _check_self_contained(html)
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert html.count('<div class="card">') == 3


@requires_chromium
def test_resnet18_report_opens_in_chromium(resnet_report):
    page = check_page(resnet_report)
    assert page.console_errors == [] and page.sections == SECTIONS
    assert all(image["complete"] and image["width"] > 0 for image in page.images)


def _brightness_csv(folder: Path, count: int) -> Path:
    """Fashion-MNIST images with a real numeric target: their mean brightness."""
    from cnnlab.data.named import open_named

    source = open_named("fashion-mnist", split="test")
    folder.mkdir(parents=True)
    lines = ["path,brightness"]
    for index in range(count):
        Image.fromarray(source.pixels[index]).save(folder / f"{index:04d}.png")
        lines.append(f"{index:04d}.png,{source.pixels[index].mean():.3f}")
    (folder / "brightness.csv").write_text("\n".join(lines) + "\n")
    return folder / "brightness.csv"


def test_regression_run_explain_and_report(tmp_path, fashion_pngs):
    import cnnlab

    csv_path = _brightness_csv(tmp_path / "data", 300)
    run = cnnlab.train(data=str(csv_path), task="regression", model="guide-cnn", epochs=1,
                       runs_dir=str(tmp_path), name="brightness", quiet=True).run_dir
    explained = run_cli("explain", run, fashion_pngs[0])
    assert explained.exit_code == 0, explained.stderr
    assert "predicted brightness = " in explained.stdout and "Grad-CAM for brightness" in explained.stdout

    # A CSV has no test split: the report scores the 30 images the run held out, and says so.
    no_test_split = run_cli("report", run, "--mistakes", 3)
    assert no_test_split.exit_code == 0, no_test_split.stderr
    assert "has no test split, so this scores the 30 validation images the run held out" in no_test_split.stderr
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "on 30 images" in html and "split val (eval-brightness-val/)" in html

    # With --data, another CSV is scored whole (not the held-out evaluation reused), and the images
    # the run trained on among it are flagged (--data with the run's own CSV means its held-out images).
    other = csv_path.with_name("again.csv")
    other.write_text(csv_path.read_text())
    outcome = run_cli("report", run, "--data", other, "--mistakes", 3)
    assert outcome.exit_code == 0, outcome.stderr
    html = (run / "report.html").read_text(encoding="utf-8")
    _check_self_contained(html)
    assert "Largest errors" in html and "R²" in html and "predicted vs true" in html
    assert "on 300 images" in html and "split test (eval-again-test/)" in html
    assert "Warning: 270 of the 300 images scored are images the model trained on" in html
    assert html.count('<div class="card">') == 3
    for section in SECTIONS:
        assert f'<section id="{section}">' in html


def test_augmented_versions_are_what_the_preset_draws():
    import numpy as np

    from cnnlab.teach.augmentation import augmented_versions

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, 12, 12), dtype=np.uint8) for _ in range(3)]
    flips = augmented_versions(images, "flip", 7)
    assert [len(versions) for versions in flips] == [7, 7, 7]
    for image, versions in zip(images, flips):
        mirrored = [bool(np.array_equal(v, image[:, :, ::-1])) for v in versions]
        assert all(m or np.array_equal(v, image) for m, v in zip(mirrored, versions))  # nothing else
        assert 0 < sum(mirrored) < 7  # some of each, over 7 draws (seed 0)
    shifted = augmented_versions(images, "light", 4)
    assert all(v.shape == (1, 12, 12) and v.dtype == np.uint8 for versions in shifted for v in versions)
    assert sum(not np.array_equal(v, images[0]) for v in shifted[0]) == 4
    assert np.array_equal(augmented_versions(images, "light", 4, seed=0)[1][2], shifted[1][2])  # seeded
    assert augmented_versions(images, "none", 4) == [[], [], []]


def test_a_run_trained_with_augmentation_shows_it_in_its_report(digits_folder, tmp_path):
    runs = tmp_path / "runs"
    trained = run_cli("train", "--data", digits_folder, "--image-size", 18, "--epochs", 1, "--augment", "light",
                      "--runs-dir", runs, "--name", "aug", "--quiet")
    assert trained.exit_code == 0, trained.stderr
    outcome = run_cli("report", runs / "aug", "--samples", 2, "--mistakes", 2, "--max-maps", 4)
    assert outcome.exit_code == 0, outcome.stderr
    page = (runs / "aug" / "report.html").read_text()
    assert "Augmentation (light): in training the network never sees the same picture twice" in page
    assert 'alt="augmented versions"' in page
    plain = run_cli("train", "--data", digits_folder, "--image-size", 18, "--epochs", 1,
                    "--runs-dir", runs, "--name", "plain", "--quiet")
    assert plain.exit_code == 0
    assert run_cli("report", runs / "plain", "--samples", 2, "--mistakes", 2, "--max-maps", 4).exit_code == 0
    assert "augmented versions" not in (runs / "plain" / "report.html").read_text()
