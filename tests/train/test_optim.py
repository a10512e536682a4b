"""Learning-rate schedules, checked at known points."""

from __future__ import annotations

import pytest

from cnnlab.errors import ConfigError
from cnnlab.train.optim import schedule_factor


def test_cosine_goes_from_one_to_zero_through_one_half():
    factor = schedule_factor("cosine", 100)
    assert factor(0) == 1.0 and factor(50) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


def test_onecycle_warms_up_then_anneals():
    factor = schedule_factor("onecycle", 100)
    assert factor(0) == pytest.approx(1 / 25)
    assert factor(30) == pytest.approx(1.0, abs=1e-3)
    assert factor(15) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert factor(100) < 1e-3
    assert all(factor(s) >= factor(s + 1) for s in range(30, 100))


def test_constant_and_unknown():
    assert schedule_factor("constant", 10)(7) == 1.0
    with pytest.raises(ConfigError, match="--schedule"):
        schedule_factor("triangle", 10)


def test_warmup_share_applies_to_every_schedule():
    cosine = schedule_factor("cosine", 100, warmup=0.2)
    assert cosine(0) == pytest.approx(1 / 25) and cosine(10) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert cosine(20) == 1.0 and cosine(60) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    constant = schedule_factor("constant", 10, warmup=0.5)
    assert [round(constant(s), 3) for s in (0, 5, 9)] == [0.04, 1.0, 1.0]
    assert constant(2) < constant(3) < 1.0


def test_onecycle_warmup_can_be_shortened_or_dropped():
    short = schedule_factor("onecycle", 100, warmup=0.15)
    assert short(0) == pytest.approx(1 / 25) and short(15) == pytest.approx(1.0)
    assert short(15) > schedule_factor("onecycle", 100)(15)  # the default is still warming up at step 15
    none = schedule_factor("onecycle", 100, warmup=0.0)
    assert none(0) == pytest.approx(1.0) and none(100) < 1e-3


def test_the_default_warmup_is_the_schedule_s_own():
    for name in ("constant", "cosine", "onecycle"):
        explicit = schedule_factor(name, 50, warmup={"onecycle": 0.3}.get(name, 0.0))
        default = schedule_factor(name, 50)
        assert [explicit(s) for s in range(51)] == [default(s) for s in range(51)]


def test_adam_gets_the_second_moment_decay_and_sgd_keeps_its_momentum():
    import torch

    from cnnlab.train.optim import build_optimizer

    model = torch.nn.Linear(3, 2)
    for name in ("adam", "adamw"):
        optimizer = build_optimizer(model, name, lr=0.01, beta2=0.99)
        assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert build_optimizer(model, "adamw", lr=0.01).param_groups[0]["betas"] == (0.9, 0.999)
    assert build_optimizer(model, "sgd", lr=0.1, momentum=0.8).param_groups[0]["momentum"] == 0.8
