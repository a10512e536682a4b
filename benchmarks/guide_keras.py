"""The guide's own Keras code: the TensorFlow CNN tutorial network, compiled and fitted as written there.

This is the "(b) guide's Keras code" that cnnlab is measured against. It needs TensorFlow
(`pip install -e '.[bench]'`, or `make bench`); without it `available()` is False and the
benchmarks print why they skip it.

    python benchmarks/guide_keras.py --epochs 2 --limit 3000       # on its own, prints the result
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import time
from typing import Any

from _common import Turns, cores, fashion_mnist

MISSING = ("TensorFlow is not installed in this environment, so the guide's Keras code is skipped; "
           "install it with `pip install -e '.[bench]'` (or run `make bench`)")


def available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _import_tensorflow(threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is not a result
    import tensorflow as tf

    # Must happen before TensorFlow runs anything. Inter-op threads stay at TensorFlow's default.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    return tf


def _epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Seconds of training per epoch: from the epoch's start to the start of its validation pass
        (`fit` runs validation between the last batch and `on_epoch_end`, and it must not count),
        less any time spent waiting for a turn (`pause`/`resume`, from the turn gate).

        Between `on_epoch_begin` and the first batch, `fit` makes the epoch's tf.data iterator and
        destroys the last one, which waits for that iterator's threads: an idle 0.4-2.7 s in a few
        epochs of most runs, with or without turns. That is part of Keras' epoch as its user sees
        it, so it counts; `setup_seconds` keeps those spans so the report can show both.
        """

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.setup_seconds: list[float] = []
            self._started = self._training_ended = self._paused = None
            self._waited = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._started, self._training_ended, self._waited = time.perf_counter(), None, 0.0

        def pause(self):
            self._paused = time.perf_counter()

        def resume(self):
            self._waited += time.perf_counter() - self._paused

        def on_train_batch_begin(self, batch, logs=None):
            if len(self.setup_seconds) < len(self.seconds) + 1:  # the epoch's first batch
                self.setup_seconds.append(time.perf_counter() - self._started - self._waited)

        def on_test_begin(self, logs=None):
            if self._started is not None and self._training_ended is None:
                self._training_ended = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            ended = self._training_ended or time.perf_counter()
            self.seconds.append(ended - self._started - self._waited)
            self._started = None

    return EpochTimer()


def _turn_gate(keras, turns: Turns, timer):
    class WaitForTurn(keras.callbacks.Callback):
        """Before each epoch's first batch: wait for this contender's turn, the timer paused.

        Not in `on_epoch_begin`: waiting there, before `fit` replaced the last epoch's tf.data
        iterator, made that replacement wait 7-40 s (idle) in some epochs once the turn came.
        Listed before the timer, so the timer sees the epoch's first batch after the wait."""

        def __init__(self):
            super().__init__()
            self._first_batch = False

        def on_epoch_begin(self, epoch, logs=None):
            self._first_batch, self._epoch = True, epoch + 1

        def on_train_batch_begin(self, batch, logs=None):
            if self._first_batch:
                self._first_batch = False
                timer.pause()
                turns.wait(f"epoch {self._epoch}")
                timer.resume()

    return WaitForTurn()


def build_model(keras):
    """The tutorial's network, layer for layer; the last layer gives logits (from_logits=True)."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10),
    ])


def train_and_test(*, epochs: int, batch_size: int, limit: int | None = None, threads: int = 1,
                   seed: int = 0, turns: Turns | None = None) -> dict[str, Any]:
    """`model.fit(x, y, epochs, batch_size, validation_split=0.1)`, then `model.evaluate` on the test data.
    With `turns`, each epoch and the test scoring wait for this contender's turn (untimed)."""
    turns = turns or Turns()
    tf = _import_tensorflow(threads)
    keras = tf.keras
    keras.utils.set_random_seed(seed)
    wall_start = time.perf_counter()
    train_images, train_labels = fashion_mnist("train", limit, seed)
    test_images, test_labels = fashion_mnist("test")
    # The tutorial's preparation: scale pixel values to 0..1, add the channel axis (NHWC).
    train_images = train_images[..., None].astype("float32") / 255.0
    test_images = test_images[..., None].astype("float32") / 255.0

    model = build_model(keras)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    timer = _epoch_timer(keras)
    # verbose=2: one line per epoch (the guide's default progress bar would redraw after every batch).
    fit = model.fit(train_images, train_labels, epochs=epochs, batch_size=batch_size, validation_split=0.1,
                    callbacks=[_turn_gate(keras, turns, timer), timer], verbose=2)  # the gate first: untimed
    turns.wait("test")
    _, test_accuracy = model.evaluate(test_images, test_labels, batch_size=batch_size, verbose=0)

    history = [{"epoch": index + 1, "train_loss": fit.history["loss"][index],
                "val_accuracy": fit.history["val_accuracy"][index]} for index in range(len(timer.seconds))]
    train_count = math.ceil(len(train_images) * (1.0 - 0.1))  # what validation_split leaves (Keras' rounding)
    return {"name": "guide Keras code", "epochs": epochs, "batch_size": batch_size, "threads": threads,
            "train_images": train_count, "epoch_train_seconds": timer.seconds,
            "epoch_setup_seconds": timer.setup_seconds, "history": history,
            "test_accuracy": float(test_accuracy),
            "wall_seconds": time.perf_counter() - wall_start - turns.waited_seconds,
            "tensorflow": tf.__version__, "keras": keras.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=cores())
    args = parser.parse_args()
    if not available():
        raise SystemExit(MISSING)
    print(json.dumps(train_and_test(epochs=args.epochs, batch_size=args.batch_size, limit=args.limit,
                                    threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
