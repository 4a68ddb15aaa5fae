import numpy as np
import pytest

from raylm.data.cache import PreparedSet
from raylm.data.record import DataError
from raylm.data.splits import make_split, mix_counts


def dataset(name: str, n: int) -> PreparedSet:
    ids = tuple(f"{name}/{i:04d}" for i in range(n))
    images = np.zeros((n, 4, 4, 1), np.uint8)
    return PreparedSet(name, images, np.zeros((n, 68, 2), np.float32), ids, (name,) * n)


def split(train_size=100, real_fraction=0.2, seed=0, synthetic_n=300, real_n=200, **kwargs):
    real = dataset("real", real_n)
    tests = kwargs.pop("tests", {"real": real})
    return make_split(
        dataset("synthetic", synthetic_n),
        real,
        tests,
        train_size,
        real_fraction,
        val_size=kwargs.pop("val_size", 50),
        test_size=kwargs.pop("test_size", 60),
        seed=seed,
        **kwargs,
    )


@pytest.mark.parametrize(
    "n, r, expected",
    [
        (2000, 0.0, (2000, 0)),
        (2000, 0.05, (1900, 100)),
        (5000, 0.2, (4000, 1000)),
        (10, 0.25, (8, 2)),
        (7, 1.0, (0, 7)),
    ],
)
def test_mix_counts(n, r, expected):
    assert mix_counts(n, r) == expected


def test_counts_and_no_overlap_between_train_val_test():
    result = split(train_size=100, real_fraction=0.2, val_real_size=10)
    synthetic, real = result.train
    assert (len(synthetic), len(real)) == (80, 20)
    assert (synthetic.kind, real.kind) == ("synthetic", "real")
    train_ids = set(synthetic.ids) | set(real.ids)
    val_ids, val_real_ids, test_ids = set(result.val.ids), set(result.val_real.ids), set(result.tests["real"].ids)
    assert len(val_ids) == 50 and len(val_real_ids) == 10 and len(test_ids) == 60
    assert not train_ids & val_ids and not train_ids & test_ids and not train_ids & val_real_ids
    assert not val_real_ids & test_ids


def test_mixing_faces_are_never_in_a_separate_test_set_with_shared_ids():
    real = dataset("real", 200)
    other_test = PreparedSet("other", real.images, real.landmarks, real.ids[:150], ("other",) * 150)
    result = split(train_size=100, real_fraction=0.5, tests={"other": other_test}, test_size=150)
    assert set(result.train[1].ids) <= {f"real/{i:04d}" for i in range(150, 200)}


def test_same_seed_same_split_and_other_seed_another():
    a, b, c = split(seed=1), split(seed=1), split(seed=2)
    for part_a, part_b in zip(a.train, b.train, strict=True):
        np.testing.assert_array_equal(part_a.indices, part_b.indices)
    np.testing.assert_array_equal(a.tests["real"].indices, b.tests["real"].indices)
    assert not np.array_equal(a.train[0].indices, c.train[0].indices)


def test_held_out_sets_do_not_move_with_size_or_fraction_and_small_sets_nest():
    small, large, mixed = (
        split(train_size=50, real_fraction=0.0),
        split(train_size=200, real_fraction=0.0),
        split(train_size=200, real_fraction=0.5),
    )
    np.testing.assert_array_equal(small.val.indices, large.val.indices)
    np.testing.assert_array_equal(small.tests["real"].indices, mixed.tests["real"].indices)
    assert set(small.train[0].ids) <= set(large.train[0].ids)
    assert len(small.train) == 1  # r = 0: no real part


def test_not_enough_faces_names_the_fields():
    with pytest.raises(DataError, match=r"data.train_size=300 .* needs 350 synthetic faces.* has 300"):
        split(train_size=300, real_fraction=0.0)
    with pytest.raises(DataError, match=r"needs 150 real faces outside the test sets, but real has 140"):
        split(train_size=300, real_fraction=0.5, synthetic_n=400)
    with pytest.raises(DataError, match="real_fraction must be within"):
        split(real_fraction=1.5)


def test_a_test_set_from_the_synthetic_source_is_carved_out_of_the_synthetic_pool():
    synthetic = dataset("synthetic", 300)
    result = make_split(synthetic, None, {"synthetic": synthetic}, 150, 0.0, val_size=50, test_size=100, seed=0)
    test_ids = set(result.tests["synthetic"].ids)
    assert len(test_ids) == 100 and (len(result.train[0]), len(result.val)) == (150, 50)
    assert not test_ids & set(result.train[0].ids) and not test_ids & set(result.val.ids)
    with pytest.raises(DataError, match="needs 201 synthetic faces outside the test sets, but synthetic has 200"):
        make_split(synthetic, None, {"synthetic": synthetic}, 151, 0.0, val_size=50, test_size=100, seed=0)


def test_repeat_synthetic_fills_a_larger_share_with_the_training_renders_again_never_the_held_out_ones():
    result = split(train_size=250, real_fraction=0.2, synthetic_n=130, repeat_synthetic=True)  # 200 synthetic, 80 left
    (synthetic, real) = result.train
    once = synthetic.ids[:80]
    assert len(synthetic) == 200 and len(set(once)) == 80 and synthetic.ids == (once * 3)[:200]
    assert not set(once) & set(result.val.ids) and len(real) == 50
    # the same split without it asks for more faces and names the switch
    with pytest.raises(DataError, match="set data.repeat_synthetic: true"):
        split(train_size=250, real_fraction=0.2, synthetic_n=130)
    # smaller shares are the plain split: repeating changes nothing until the pool runs out
    assert split(repeat_synthetic=True).train[0].ids == split().train[0].ids
