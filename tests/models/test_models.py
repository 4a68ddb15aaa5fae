"""Tests for the model registry and every registered model (raylm/models)."""

import pytest
import timm
import torch
import torch.nn as nn

from raylm.models import UnknownModel, create_model, list_models
from raylm.models.heads import soft_argmax

SLOW = {"legacy_xception", "xception65", "xception71", "resnet50"}
MODEL_NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in list_models()]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_expected_models_are_registered():
    assert set(list_models()) >= {
        "ours", "ours-relu8", "ours-tiny", "legacy_xception", "xception41",
        "xception65", "xception71", "resnet50", "mobilenetv2_100",
    }  # fmt: skip


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_gives_finite_136_outputs(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 128, 128))
    assert out.shape == (2, 136)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_sgd_step_changes_parameters(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.mse_loss(model(torch.randn(2, 1, 128, 128)), torch.rand(2, 136))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    # Every parameter is in the graph (no dead layers). Not every one moves on the
    # first step: timm's ResNets zero-init each block's last BN scale, which zeroes
    # the gradient of the convs before it.
    assert all(p.grad is not None for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_ours_has_the_original_parameter_count():
    # Total of the layer table in the README of braindotai/Facial-Landmarks-Detection-Pytorch.
    assert count_parameters(create_model("ours")) == 2_630_888


def test_ours_relu8_is_relu_with_eight_middle_blocks():
    model = create_model("ours-relu8")
    assert len(model.middle) == 8
    activations = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}
    assert activations == {nn.ReLU}
    # two more middle blocks of 3 x (depthwise 2,304 + pointwise 65,536 + BN 512)
    assert count_parameters(model) == 2_630_888 + 2 * 3 * 68_352


@pytest.mark.parametrize("name", ["ours-tiny", "timm:resnet18"])
def test_three_input_channels(name):
    model = create_model(name, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 128, 128)).shape == (2, 136)


def test_ours_three_channel_stem_parameter_count():
    # only the first conv grows: 3 x 32 x 3 x 3 instead of 1 x 32 x 3 x 3
    assert count_parameters(create_model("ours", in_channels=3)) == 2_630_888 + 2 * 288


def test_num_points_sets_output_size():
    model = create_model("ours-tiny", num_points=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError, match="leaky_relu.*relu"):
        create_model("ours", activation="gelu")


def test_unknown_model_lists_names_and_timm_prefix():
    with pytest.raises(UnknownModel) as error:
        create_model("not-a-model")
    message = str(error.value)
    assert "ours-relu8" in message and "resnet50" in message
    assert "timm:<name>" in message
    assert isinstance(error.value, ValueError)


def test_any_timm_model_by_prefix():
    model = create_model("timm:resnet18").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 128)).shape == (2, 136)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(UnknownModel, match="timm has no model 'not_a_model'"):
        create_model("timm:not_a_model")


def test_timm_weights_load_from_a_local_file(tmp_path):
    # An ImageNet-shaped checkpoint (1000 classes, RGB stem) as a user would supply.
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_model("timm:resnet18", in_channels=3, pretrained_path=path)
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 136  # the 1000-class head is dropped, not loaded


def test_missing_weights_file_raises(tmp_path):
    with pytest.raises(UnknownModel, match="model.options.pretrained_path: .*missing.pth is not a file"):
        create_model("timm:resnet18", pretrained_path=tmp_path / "missing.pth")


def test_model_flops_rank_the_architectures_by_compute():
    from raylm.models import model_flops

    flops = {name: model_flops(name, 1, 128) for name in ("ours", "mobilenetv2_100", "ours-tiny")}
    assert flops["ours"] > 20 * flops["mobilenetv2_100"] > 20 * flops["ours-tiny"] > 0
    assert model_flops("ours-tiny", 1, 64) == pytest.approx(flops["ours-tiny"] / 4, rel=0.05)  # conv FLOPs ~ pixels


def test_soft_argmax_of_a_peaked_heatmap_is_that_cells_centre():
    logits = torch.full((1, 2, 16, 16), -50.0)
    logits[0, 0, 3, 12] = 50.0  # row 3, column 12
    logits[0, 1] = 0.0  # flat: the centre of the crop
    x0, y0, x1, y1 = soft_argmax(logits)[0].tolist()
    assert (x0, y0) == pytest.approx(((12 + 0.5) / 16 - 0.5, (3 + 0.5) / 16 - 0.5))
    assert (x1, y1) == pytest.approx((0.0, 0.0), abs=1e-6)


@pytest.mark.parametrize("name", ["mobilenetv2_100", "timm:resnet18"])
def test_integral_head_predicts_points_inside_the_crop(name):
    outputs = create_model(name, head="integral", num_points=5).eval()(torch.randn(2, 1, 64, 64))
    assert outputs.shape == (2, 10) and outputs.abs().max() < 0.5 - 1 / 16  # cell centres at stride 8


def test_integral_head_learns():
    torch.manual_seed(0)
    model = create_model("timm:resnet18", head="integral", num_points=5)
    images, target = torch.randn(4, 1, 32, 32), torch.rand(4, 10) * 0.6 - 0.3
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = (model(images) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_integral_head_needs_stride_8_16_32_features_and_a_known_head_name():
    with pytest.raises(UnknownModel, match="head must be 'regression' or 'integral'"):
        create_model("mobilenetv2_100", head="heatmap")
    with pytest.raises(UnknownModel, match="feature strides .* use head: regression"):
        create_model("timm:resnet18", head="integral", output_stride=16)  # dilated: strides 8, 16, 16
