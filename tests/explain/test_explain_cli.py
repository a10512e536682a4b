"""`cnnlab explain` on real trained runs: a Fashion-MNIST guide-cnn and a resnet18."""

from __future__ import annotations

from PIL import Image

from tests.helpers import run_cli


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return picture.size


def test_explain_a_guide_cnn(guide_run, fashion_pngs, tmp_path):
    outcome = run_cli("explain", guide_run, *fashion_pngs[:2], "-o", tmp_path / "out")
    assert outcome.exit_code == 0, outcome.stderr
    for image in fashion_pngs[:2]:
        folder = tmp_path / "out" / image.stem
        assert _png_size(folder / "filters.png")[0] >= 800
        assert _png_size(folder / "gradcam.png")[0] >= 1000
        grids = sorted(path.name for path in (folder / "feature-maps").iterdir())
        assert grids == ["01-features.conv1.png", "02-features.pool1.png", "03-features.conv2.png",
                         "04-features.pool2.png", "05-features.conv3.png"]
        assert f"{image.name}: predicted " in outcome.stdout
    assert "Grad-CAM for" in outcome.stdout and "at features.relu2 peaks at x=" in outcome.stdout


def test_explain_writes_into_the_run_folder_by_default(guide_run, fashion_pngs):
    outcome = run_cli("explain", guide_run, fashion_pngs[2], "--class", "trouser", "--max-maps", "8")
    assert outcome.exit_code == 0, outcome.stderr
    assert "Grad-CAM for Trouser" in outcome.stdout
    assert (guide_run / "explain" / fashion_pngs[2].stem / "gradcam.png").is_file()


def test_explain_a_resnet18(resnet_run, fashion_pngs, tmp_path):
    outcome = run_cli("explain", resnet_run, fashion_pngs[0], "--layer", "layer2", "-o", tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    folder = tmp_path / fashion_pngs[0].stem
    grids = sorted(path.name for path in (folder / "feature-maps").iterdir())
    assert grids == ["01-conv1.png", "02-maxpool.png", "03-layer1.png", "04-layer2.png", "05-layer3.png",
                     "06-layer4.png"]
    assert "at layer2 peaks" in outcome.stdout
    assert _png_size(folder / "filters.png")[0] >= 800  # 64 colour filters of 7×7


def test_explain_errors_name_the_flag_and_the_choices(guide_run, fashion_pngs, tmp_path):
    wrong_class = run_cli("explain", guide_run, fashion_pngs[0], "--class", "Shoe", "-o", tmp_path)
    assert wrong_class.exit_code == 2
    assert "--class Shoe: not one of the model's classes: T-shirt/top, Trouser" in wrong_class.stderr
    wrong_layer = run_cli("explain", guide_run, fashion_pngs[0], "--layer", "features.conv4", "-o", tmp_path)
    assert wrong_layer.exit_code == 2
    assert "--layer features.conv4" in wrong_layer.stderr
    assert "Did you mean features.conv" in wrong_layer.stderr
    missing = run_cli("explain", guide_run, tmp_path / "nope.png", "-o", tmp_path)
    assert missing.exit_code == 2 and "nope.png: file does not exist" in missing.stderr
    not_a_run = run_cli("explain", tmp_path / "norun", fashion_pngs[0])
    assert not_a_run.exit_code == 2 and "not a run folder" in not_a_run.stderr
    for outcome in (wrong_class, wrong_layer, missing, not_a_run):
        assert "Traceback" not in outcome.stderr
