"""cnnlab: convolutional neural networks, from images on disk to a trained, evaluated, explained model.

    import cnnlab
    result = cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=3)
    report = cnnlab.evaluate(result.run_dir, split="test")
    rows = cnnlab.predict(result.run_dir, ["shoe.png"], top_k=3)
    cnnlab.explain(result.run_dir, ["shoe.png"])    # filters, feature maps, Grad-CAM
    cnnlab.report(result.run_dir)                   # one HTML page
    trained = cnnlab.load(result.run_dir)          # model + class names + preprocessing
    cnnlab.export(result.run_dir)                   # runs/NAME/export/model.onnx, checked

Names are imported on first use, so `import cnnlab` (and `cnnlab --help`) stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "predict": "cnnlab.evaluate.predict:predict",
    "load": "cnnlab.trained:load",
    "TrainConfig": "cnnlab.config:TrainConfig",
    "create_model": "cnnlab.models.build:create_model",
    "list_models": "cnnlab.models.registry:list_models",
    "register_model": "cnnlab.models.registry:register_model",
    "list_datasets": "cnnlab.data.named:list_datasets",
    "summarize": "cnnlab.models.summary:summarize",
    "CnnlabError": "cnnlab.errors:CnnlabError",
}
# `cnnlab.train`, `.evaluate`, `.explain`, `.report`, `.export`: callable packages (_callable_module).
_CALLABLE_PACKAGES = ("train", "evaluate", "explain", "report", "export")

__all__ = [*_LAZY, *_CALLABLE_PACKAGES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"cnnlab.{name}")
    if name in _LAZY:
        module_name, attribute = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
