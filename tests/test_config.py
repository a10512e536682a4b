"""TrainConfig: recipes fill what nobody set; explicit flags and config-file keys win."""

from __future__ import annotations

import pytest
import yaml

from cnnlab.config import RECIPES, TrainConfig
from cnnlab.errors import ConfigError
from cnnlab.train.trainer import merge_config


def test_recipe_fills_the_defaults():
    config = merge_config(None, {"data": "fashion-mnist", "recipe": "fast"})
    for key, value in RECIPES["fast"].items():
        assert getattr(config, key) == value


def test_flags_override_the_recipe():
    config = merge_config(None, {"data": "fashion-mnist", "recipe": "fast", "epochs": 2, "augment": "none"})
    assert config.epochs == 2 and config.augment == "none" and config.model == "fast-cnn"


def test_config_file_keys_override_the_recipe(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "digits", "recipe": "fast", "batch-size": 64}))
    config = merge_config(path, {"lr": "0.01"})
    assert config.batch_size == 64 and config.lr == 0.01 and config.epochs == RECIPES["fast"]["epochs"]


def test_a_saved_resolved_config_reproduces_itself():
    config = merge_config(None, {"data": "digits", "recipe": "fast", "epochs": 3})
    again = merge_config(TrainConfig.from_dict(config.to_dict()), {})
    assert again == config


def test_unknown_recipe_is_refused():
    with pytest.raises(ConfigError, match="--recipe must be one of fast"):
        merge_config(None, {"data": "digits", "recipe": "fastest"})
