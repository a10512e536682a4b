"""TrainConfig: recipes fill what nobody set; explicit flags and config-file keys win."""

from __future__ import annotations

import pytest
import yaml

from cnnlab.config import RECIPES, TrainConfig
from cnnlab.errors import ConfigError
from cnnlab.train.trainer import merge_config


@pytest.mark.parametrize("recipe", ["fast", "fast-gpu"])
def test_recipe_fills_the_defaults(recipe):
    config = merge_config(None, {"data": "fashion-mnist", "recipe": recipe})
    for key, value in RECIPES[recipe].items():
        assert getattr(config, key) == value


def test_the_gpu_recipe_is_the_fast_one_in_larger_batches():
    fast, gpu = RECIPES["fast"], RECIPES["fast-gpu"]
    assert (gpu["batch_size"], gpu["lr"], gpu["epochs"]) == (512, 0.008, 6)
    assert fast["model"] == "fast-cnn-v2"
    assert {k: v for k, v in gpu.items() if k not in ("batch_size", "lr", "epochs")} == \
        {k: v for k, v in fast.items() if k not in ("batch_size", "lr", "epochs")}


def test_flags_override_the_recipe():
    config = merge_config(None, {"data": "fashion-mnist", "recipe": "fast", "epochs": 2, "augment": "none"})
    assert config.epochs == 2 and config.augment == "none" and config.model == "fast-cnn-v2"


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


@pytest.mark.parametrize("fields, message", [
    ({"beta2": 1.0}, "--beta2 must be between 0 and 1, e.g. 0.99 (got 1.0)"),
    ({"beta2": 0.99, "optimizer": "sgd"}, "--beta2 is Adam's setting; with --optimizer sgd set --momentum instead"),
    ({"warmup": 1.0}, "--warmup is a share of the run's steps, from 0 up to (not including) 1 (got 1.0)"),
    ({"warmup": -0.1}, "--warmup is a share"),
])
def test_bad_adam_and_warmup_settings_name_the_flag(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(data="digits", **fields).validate()


def test_a_run_saved_before_beta2_and_warmup_existed_trains_as_it_did():
    saved = TrainConfig(data="digits").to_dict()
    del saved["beta2"], saved["warmup"]
    config = TrainConfig.from_dict(saved).validate()
    assert config.beta2 == 0.999 and config.warmup is None  # PyTorch's β2; the schedule's own warm-up


def test_a_tasks_defaults_fill_what_the_user_left_unset_and_its_rate_goes_with_its_optimiser():
    from cnnlab.config import with_recipe

    plain = with_recipe(TrainConfig(data="fashion-mnist-boxes", task="detection"), explicit={"task", "data"})
    assert (plain.model, plain.batch_size, plain.lr, plain.augment) == ("cnnlab-det", 64, 0.006, "flip")
    chosen = with_recipe(TrainConfig(data="fashion-mnist-boxes", task="detection", batch_size=16, optimizer="sgd"),
                         explicit={"task", "data", "batch_size", "optimizer"})
    assert chosen.batch_size == 16 and chosen.lr is None and chosen.resolved_lr() == 0.05  # SGD's own default
