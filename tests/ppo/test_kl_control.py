import pytest

from rlhf.ppo.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller


def test_adaptive_controller_by_hand():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # KL 9 -> error clip(9/6 - 1) = +0.2 (clipped from 0.5); beta *= 1 + 0.2 * 512 / 10000
    assert ctl.update(9.0, 512) == pytest.approx(0.1 * 1.01024)
    # KL 5.4 -> error -0.1; beta *= 1 - 0.1 * 512 / 10000
    assert ctl.update(5.4, 512) == pytest.approx(0.1 * 1.01024 * 0.99488)
    # KL far below target: error clipped at -0.2
    before = ctl.value
    assert ctl.update(0.0, 100) == pytest.approx(before * (1 - 0.2 * 100 / 10_000))


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
