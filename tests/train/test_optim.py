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
