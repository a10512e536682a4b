"""How much do guide-cnn's pretrained layers know about new classes? Linear probes on the digits protocol.

    python benchmarks/transfer_learning.py --protocol digits --precision fp32 --variants scratch --work W
    python benchmarks/transfer_feature_probe.py --work W

For the run pretrained on digits 0–4 (the digits protocol of benchmarks/transfer_learning.py) and for
randomly initialised networks, the features of the 50 training images of digits 5–9 after the
convolutions (576) and after the dense layer fc1 (64) are fed to a logistic regression, scored on the
test images; and the features' effective rank (exp of the entropy of the normalised singular values).
A pretrained layer that transfers should beat a random one (docs/transfer-learning.md, section 6).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _images(folder: Path, mean: float, std: float):
    import torch
    from PIL import Image

    pixels, labels = [], []
    for label, class_folder in enumerate(sorted(folder.iterdir())):
        for path in sorted(class_folder.glob("*.png")):
            image = Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
            pixels.append(np.asarray(image, dtype=np.float32) / 255)
            labels.append(label)
    return (torch.tensor(np.stack(pixels))[:, None] - mean) / std, np.array(labels)


def _features(model, images) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        convolutions = model.forward_features(images).flatten(1)
        dense = model.head.relu4(model.head.fc1(convolutions))
    return {"conv": convolutions.numpy(), "fc1": dense.numpy()}


def effective_rank(features: np.ndarray) -> float:
    singular = np.linalg.svd(features - features.mean(0), compute_uv=False)
    share = singular / singular.sum()
    return float(np.exp(-(share * np.log(share + 1e-12)).sum()))


def main() -> None:
    import torch
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression

    from cnnlab.models.build import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnlab-transfer"))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    root = args.work / "digits"
    weights = root / f"runs-{args.precision}" / "pre" / "weights"
    sidecar = json.loads((weights / "best.json").read_text())
    mean, std = sidecar["input"]["mean"][0], sidecar["input"]["std"][0]
    train_images, train_labels = _images(root / "data" / "new" / "train", mean, std)
    test_images, test_labels = _images(root / "data" / "new" / "test", mean, std)
    pretrained = {k: v for k, v in load_file(weights / "best.safetensors").items() if not k.startswith("head.fc2")}
    print("| network | layer | logistic regression, test accuracy | effective rank |\n|---|---|---|---|")
    for name, seed in [("pretrained on digits 0–4", 0)] + [(f"random, seed {s}", s) for s in args.random_seeds]:
        torch.manual_seed(seed)
        model = create_model("guide-cnn", in_channels=1, num_outputs=5, image_size=(28, 28)).eval()
        if name.startswith("pretrained"):
            model.load_state_dict(pretrained, strict=False)
        train, test = _features(model, train_images), _features(model, test_images)
        for layer in ("conv", "fc1"):
            scale = train[layer].std() + 1e-8
            probe = LogisticRegression(max_iter=2000).fit(train[layer] / scale, train_labels)
            accuracy = float((probe.predict(test[layer] / scale) == test_labels).mean())
            print(f"| {name} | {layer} | {100 * accuracy:.1f}% | {effective_rank(test[layer]):.1f} |")


if __name__ == "__main__":
    main()
