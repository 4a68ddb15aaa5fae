"""Which executor feeds a run: the device path unless its faces do not fit its share of the GPU."""

import pytest
import torch
import torch.nn as nn

from raylm.config import ConfigError
from raylm.data.augment import AugmentConfig
from raylm.train.feed import choose_feed
from raylm.train.hardware import Hardware

GIB = 2**30
MODEL = nn.Linear(1000, 1000)  # 1,001,000 float32 parameters: 4 states of about 15 MiB
STATES = 4 * 1_001_000 * 4


def quarter_gpu(share: float = 0.25) -> Hardware:
    return Hardware(torch.device("cuda"), torch.bfloat16, True, 2, share)


def test_the_cpu_and_a_gpu_with_room_take_the_device_path():
    cpu = Hardware(torch.device("cpu"), None, False, 0)
    assert choose_feed("auto", AugmentConfig(), 50 * GIB, MODEL, cpu, memory=None) == ("device", "")
    assert choose_feed("auto", AugmentConfig(), GIB, MODEL, quarter_gpu(), memory=16 * GIB) == ("device", "")
    assert choose_feed("loader", AugmentConfig(), GIB, MODEL, quarter_gpu(), memory=16 * GIB) == ("loader", "")


def test_faces_beyond_half_of_a_trials_share_fall_back_to_the_loader_saying_why():
    # A quarter of a 16 GiB GPU is 4 GiB; faces and states may take half of it.
    feed, why = choose_feed("auto", AugmentConfig(), 2 * GIB, MODEL, quarter_gpu(), memory=16 * GIB)
    assert feed == "loader"
    assert why == (
        "the training and validation faces (2.00 GiB) and model states (16 MiB) exceed half of this trial's share "
        "of cuda (4.00 GiB, 0.25 of 16.00 GiB), so faces come through loader workers"
    )
    just_fits = 2 * GIB - STATES
    assert choose_feed("auto", AugmentConfig(), just_fits, MODEL, quarter_gpu(), memory=16 * GIB)[0] == "device"
    with pytest.raises(ConfigError, match="^train.feed is 'device' but the training and validation faces"):
        choose_feed("device", AugmentConfig(), 2 * GIB, MODEL, quarter_gpu(), memory=16 * GIB)


def test_a_model_larger_than_the_share_is_an_error_naming_the_fraction_and_sizes():
    with pytest.raises(ConfigError) as caught:
        choose_feed("auto", AugmentConfig(), 0, MODEL, quarter_gpu(0.001), memory=8 * GIB)
    assert str(caught.value) == (
        "the model's weights, gradients and optimizer states take 16 MiB, more than this trial's share of cuda "
        "(9 MiB, 0.001 of 8.00 GiB): raise search.resources.gpu or choose a smaller model"
    )


def test_background_images_are_composited_on_the_loader_path():
    config = AugmentConfig(composite=0.5, backgrounds="/data/backgrounds")
    feed, why = choose_feed("auto", config, 0, MODEL, quarter_gpu(), memory=16 * GIB)
    assert (feed, why) == ("loader", "compositing onto images from /data/backgrounds runs on the loader path")
    with pytest.raises(ConfigError, match="set train.feed to auto or loader$"):
        choose_feed("device", config, 0, MODEL, quarter_gpu(), memory=16 * GIB)
