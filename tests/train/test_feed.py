"""Which executor feeds a run: the device path unless its faces do not fit its share of the GPU beside training."""

import pytest
import torch

from raylm.config import ConfigError
from raylm.data.augment import AugmentConfig
from raylm.train.feed import choose_feed
from raylm.train.hardware import Hardware
from raylm.train.memory import Estimate

GIB, MIB = 2**30, 2**20


def need(faces: int, training: int = 3 * GIB) -> Estimate:
    """A run whose peak is `training` bytes on the loader path (1 GiB of it the CUDA context) plus `faces`."""
    return Estimate(16 * MIB, 16 * MIB, 32 * MIB, training - 2 * GIB - 64 * MIB, 0, GIB, faces, GIB)


def quarter_gpu(share: float = 0.25) -> Hardware:
    return Hardware(torch.device("cuda"), torch.bfloat16, True, 2, share)


def test_the_cpu_and_a_gpu_with_room_take_the_device_path():
    cpu = Hardware(torch.device("cpu"), None, False, 0)
    assert choose_feed("auto", AugmentConfig(), None, cpu, memory=None) == ("device", "")
    assert choose_feed("auto", AugmentConfig(), need(GIB), quarter_gpu(), memory=16 * GIB) == ("device", "")
    assert choose_feed("loader", AugmentConfig(), need(GIB), quarter_gpu(), memory=16 * GIB) == ("loader", "")


def test_faces_that_do_not_fit_beside_training_fall_back_to_the_loader_saying_why():
    # A quarter of a 16 GiB GPU is 4 GiB; training takes 3, so 1 GiB of faces fits and a byte more does not.
    assert choose_feed("auto", AugmentConfig(), need(GIB), quarter_gpu(), memory=16 * GIB)[0] == "device"
    feed, why = choose_feed("auto", AugmentConfig(), need(GIB + 1), quarter_gpu(), memory=16 * GIB)
    assert feed == "loader"
    assert why == (
        "the training and validation faces (1.00 GiB) do not fit beside training (3.00 GiB) in this trial's share "
        "of cuda (4.00 GiB, 0.25 of 16.00 GiB), so faces come through loader workers"
    )
    with pytest.raises(ConfigError, match="^train.feed is 'device' but the training and validation faces"):
        choose_feed("device", AugmentConfig(), need(2 * GIB), quarter_gpu(), memory=16 * GIB)


def test_training_beyond_the_share_is_an_error_naming_the_run_the_estimate_and_the_fixes():
    with pytest.raises(ConfigError) as caught:
        choose_feed("loader", AugmentConfig(), need(0, 5 * GIB), quarter_gpu(), 16 * GIB, "ours at batch 512")
    assert str(caught.value) == (
        "ours at batch 512 needs about 5.00 GiB of GPU memory (weights 16 MiB, gradients 16 MiB, optimizer 32 MiB, "
        "activations 2.94 GiB, batch 0 MiB, workspace 1.00 GiB, context 1.00 GiB), more than a trial's share "
        "of cuda (4.00 GiB: 0.25 of 16.00 GiB); lower train.batch_size (or its largest value in search.space), "
        "raise search.resources.gpu, or train on GPUs with more memory"
    )


def test_background_images_are_composited_on_the_loader_path():
    config = AugmentConfig(composite=0.5, backgrounds="/data/backgrounds")
    feed, why = choose_feed("auto", config, need(0), quarter_gpu(), memory=16 * GIB)
    assert (feed, why) == ("loader", "compositing onto images from /data/backgrounds runs on the loader path")
    with pytest.raises(ConfigError, match="set train.feed to auto or loader$"):
        choose_feed("device", config, need(0), quarter_gpu(), memory=16 * GIB)
