"""Relative dataset paths are anchored where a study starts, because trials run in their own folders."""

from pathlib import Path

from raylm.data.pipeline import DataConfig, anchored
from raylm.data.spec import absolute_spec


def test_relative_paths_are_anchored_and_everything_else_is_left_alone():
    base = Path("/work/study")
    assert absolute_spec("pts:../shared/real?subsets=afw", base) == "pts:/work/study/../shared/real?subsets=afw"
    assert (
        absolute_spec("ffhq:ffhq/meta.json:ffhq/images", base)
        == "ffhq:/work/study/ffhq/meta.json:/work/study/ffhq/images"
    )
    for unchanged in ("pts:/data/300W", "pts:~/faces", "facesynthetics:s3://bucket/fs", "builtin:synthetic?n=5",
                      "ffhq:s3://b/meta.json:s3://b/images"):  # fmt: skip
        assert absolute_spec(unchanged, base) == unchanged
    config = anchored(DataConfig(synthetic="pts:faces", cache_dir="cache", prepared="s3://b/prepared"), base)
    assert (config.synthetic, config.cache_dir, config.prepared) == (
        "pts:/work/study/faces",
        "/work/study/cache",
        "s3://b/prepared",
    )
    assert config.tests == DataConfig().tests  # builtin specs


def test_compositing_without_masks_fails_at_the_check():
    import pytest

    from raylm.data.augment import AugmentConfig
    from raylm.data.pipeline import check_data
    from raylm.data.record import DataError

    config = DataConfig(
        synthetic="builtin:synthetic?n=300",
        real=None,
        tests={},
        train_size=50,
        val_size=10,
        augment=AugmentConfig(composite=0.5),
    )
    with pytest.raises(DataError, match=r"data.augment.composite=0.5 .* add \?masks=true"):
        check_data(config)
