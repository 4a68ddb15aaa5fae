import math

import pytest
import torch

from raylm.train.losses import build_loss


def test_mse_and_l1_on_normalised_coordinates():
    prediction, target = torch.tensor([[0.1, -0.2]]), torch.tensor([[0.0, 0.0]])
    assert build_loss("mse", 128)(prediction, target).item() == pytest.approx((0.01 + 0.04) / 2)
    assert build_loss("l1", 128)(prediction, target).item() == pytest.approx(0.15)


def test_wing_loss_is_logarithmic_near_zero_and_linear_far_away():
    loss = build_loss("wing", 100, wing_width=10.0, wing_curvature=2.0)
    small = loss(torch.tensor([[0.04]]), torch.tensor([[0.0]]))  # 4 px
    assert small.item() == pytest.approx(10 * math.log(1 + 4 / 2))
    large = loss(torch.tensor([[0.25]]), torch.tensor([[0.0]]))  # 25 px
    constant = 10 - 10 * math.log(1 + 10 / 2)
    assert large.item() == pytest.approx(25 - constant)
    # Continuous at |x| = w.
    just_below = loss(torch.tensor([[0.0999999]]), torch.tensor([[0.0]]))
    assert just_below.item() == pytest.approx(10 - constant, abs=1e-4)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ValueError, match="mse, l1, wing"):
        build_loss("huber", 128)
