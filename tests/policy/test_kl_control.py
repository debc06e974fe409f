import math

import pytest

from rlhf.policy.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller


def test_adaptive_controller_by_hand():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # KL 9 -> error clip(9/6 - 1) = +0.2 (clipped from 0.5); beta *= exp(0.2 * 512 / 10000)
    assert ctl.update(9.0, 512) == pytest.approx(0.1 * math.exp(0.01024))
    # KL 5.4 -> error -0.1; beta *= exp(-0.1 * 512 / 10000)
    assert ctl.update(5.4, 512) == pytest.approx(0.1 * math.exp(0.01024 - 0.00512))
    # KL far below target: error clipped at -0.2
    before = ctl.value
    assert ctl.update(0.0, 100) == pytest.approx(before * math.exp(-0.2 * 100 / 10_000))


def test_beta_stays_positive_when_batch_exceeds_five_horizons():
    # Ziegler's 1 + e n / H is 1 - 0.2 * 64 / 8 = -0.6 here: beta would turn negative.
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=8, min_value=1e-3)
    for _ in range(50):
        assert ctl.update(0.0, 64) > 0
    assert ctl.value == pytest.approx(1e-3)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=8, max_value=2.0)
    for _ in range(50):
        ctl.update(1e6, 64)
    assert ctl.value == pytest.approx(2.0)


def test_adaptive_controller_converges_on_synthetic_kl():
    # A policy whose KL answers beta as KL = c / beta: the fixed point is beta* = c / target.
    c, target = 0.6, 6.0
    for start in (0.01, 0.1, 1.0):
        ctl = AdaptiveKLController(start, target=target, horizon=32)
        kls = []
        for _ in range(300):
            kls.append(c / ctl.value)
            ctl.update(kls[-1], 16)
        assert ctl.value == pytest.approx(c / target, rel=0.02)
        assert kls[-1] == pytest.approx(target, rel=0.02)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        AdaptiveKLController(0.0, 6.0, 32)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, 6.0, 0)


def test_adaptive_controller_state_round_trip():
    a = AdaptiveKLController(0.05, 3.0, 200)
    a.update(4.0, 16)
    b = AdaptiveKLController(1.0, 1.0, 1)
    b.load_state_dict(a.state_dict())
    assert (b.value, b.target, b.horizon) == (a.value, 3.0, 200)
    assert b.update(1.0, 16) == a.update(1.0, 16)


def test_fixed_controller_never_moves():
    ctl = FixedKLController(0.2)
    assert ctl.update(100.0, 64) == 0.2
    assert isinstance(make_kl_controller(0.2, False, None, 1), FixedKLController)
    with pytest.raises(ValueError):
        make_kl_controller(0.2, True, None, 100)
