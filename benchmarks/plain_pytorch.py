"""The guide's CNN trained by a plain PyTorch loop, written the way a tutorial writes it.

This is the "(a) plain hand-written PyTorch loop" that cnnlab is measured against: tensors in a
`TensorDataset`, a shuffling `DataLoader`, the network as an `nn.Sequential`, Adam at its default
learning rate, cross-entropy, and the usual `zero_grad / backward / step` loop; on a GPU, the model
moved there and each batch sent to it with `.to(device)`. Nothing in it is tuned — a benchmark that
made the baseline slow on purpose would measure nothing.

    python benchmarks/plain_pytorch.py --epochs 2 --limit 3000     # on its own, prints the result
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from _common import Turns, cores, fashion_mnist, synchronize, use_threads


def guide_cnn() -> nn.Sequential:
    """Conv2D(32) → MaxPool → Conv2D(64) → MaxPool → Conv2D(64) → Flatten → Dense(64) → Dense(10)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, kernel_size=3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 64), nn.ReLU(),
        nn.Linear(64, 10),  # logits: CrossEntropyLoss applies the softmax
    )


def to_tensors(images, labels, mean: float, std: float) -> TensorDataset:
    pixels = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0  # (N, 1, 28, 28) in 0..1
    return TensorDataset((pixels - mean) / std, torch.tensor(labels))


def accuracy(model: nn.Module, loader: DataLoader, device: str = "cpu") -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(dim=1) == labels).sum().item()
            total += len(labels)
    return correct / total


def train_and_test(*, epochs: int, batch_size: int, limit: int | None = None, threads: int = 1,
                   device: str = "cpu", seed: int = 0, turns: Turns | None = None) -> dict[str, Any]:
    """Train on 90% of the training split, validate on 10% each epoch, then score the test split.
    With `turns`, each epoch and the test scoring wait for this contender's turn (untimed)."""
    turns = turns or Turns()
    use_threads(threads)
    torch.manual_seed(seed)
    wall_start = time.perf_counter()
    train_images, train_labels = fashion_mnist("train", limit, seed)
    test_images, test_labels = fashion_mnist("test")
    mean, std = train_images.mean() / 255.0, train_images.std() / 255.0

    dataset = to_tensors(train_images, train_labels, mean, std)
    train_set, val_set = random_split(dataset, [0.9, 0.1], generator=torch.Generator().manual_seed(seed))
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=batch_size)
    test_loader = DataLoader(to_tensors(test_images, test_labels, mean, std), batch_size=batch_size)

    model = guide_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    epoch_seconds, history = [], []
    for epoch in range(1, epochs + 1):
        turns.wait(f"epoch {epoch}")
        model.train()
        started = time.perf_counter()
        running_loss = 0.0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        synchronize(device)  # the last step's work queued on a GPU belongs to this epoch
        epoch_seconds.append(time.perf_counter() - started)  # training only, as for the others
        history.append({"epoch": epoch, "train_loss": running_loss / len(train_loader),
                        "val_accuracy": accuracy(model, val_loader, device)})

    turns.wait("test")
    return {"name": "plain PyTorch loop", "epochs": epochs, "batch_size": batch_size, "threads": threads,
            "device": device, "train_images": len(train_set), "epoch_train_seconds": epoch_seconds,
            "history": history, "test_accuracy": accuracy(model, test_loader, device),
            "wall_seconds": time.perf_counter() - wall_start - turns.waited_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=cores())
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    print(json.dumps(train_and_test(epochs=args.epochs, batch_size=args.batch_size, limit=args.limit,
                                    threads=args.threads, device=args.device), indent=2))


if __name__ == "__main__":
    main()
