from pathlib import Path

import numpy as np
import pytest

from raylm.data.cache import PreparedSet
from raylm.data.config import DataConfig
from raylm.data.pipeline import index_split
from raylm.data.record import DataError
from raylm.data.splits import Groups, make_split, mix_counts, read_groups

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


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


def sides(result) -> dict[str, set[str]]:
    """Each side of a split by its faces' ids: training, selection (val_real) and each test set."""
    named = {"train": {i for part in result.train for i in part.ids}, "val_real": set(result.val_real.ids)}
    return named | {f"test_{name}": set(part.ids) for name, part in result.tests.items()}


def test_near_duplicates_of_held_out_faces_are_used_nowhere_else():
    held = dataset("held", 40)
    # Each held-out face of `held` has a near-duplicate in the real pool; so do two real pool faces, one of which
    # will be a selection face: the other must then not be trained on.
    kin = {f"real/{i:04d}" for i in range(40)}
    options = {"tests": {"held": held}, "test_size": 40, "val_real_size": 10, "real_n": 220}
    test_kin = [[f"held/{i:04d}", f"real/{i:04d}"] for i in range(40)]
    plain = split(train_size=150, real_fraction=1.0, groups=Groups(test_kin), **options)
    chosen, other = plain.val_real.ids[0], plain.train[1].ids[0]  # other: trained on, until grouped with chosen
    grouped = split(train_size=150, real_fraction=1.0, groups=Groups([*test_kin, [chosen, other]]), **options)
    faces = sides(grouped)
    assert not faces["train"] & kin  # the test faces' kin
    assert chosen in faces["val_real"] and other not in faces["train"] | faces["val_real"]
    assert len(faces["train"]) == 150 and len(faces["val_real"]) == 10  # filled from the rest
    assert faces["test_held"] == sides(plain)["test_held"]  # groups never move test faces


def test_selection_faces_can_come_from_a_dataset_of_their_own():
    real, own = dataset("real", 200), dataset("lfpw_test", 30)

    def selected_from_own(groups: Groups | None = None):
        return make_split(
            dataset("synthetic", 100), real, {"real": real}, 100, 0.5, val_size=20, test_size=40, seed=0,
            val_real_size=25, selection=own, groups=groups,
        )  # fmt: skip

    plain = selected_from_own()
    assert plain.val_real.source is own and len(plain.val_real) == 25
    trained = plain.train[1].ids[0]  # a real face trained on, made a near-duplicate of a selection face
    grouped = sides(selected_from_own(Groups([[plain.val_real.ids[0], trained]])))
    assert trained not in grouped["train"] and len(grouped["train"]) == 100  # 50 synthetic, 50 other real faces


def test_group_names_are_paths_in_the_dataset_folder_and_the_file_has_comments():
    groups = Groups(read_groups("# near-duplicates\nlfpw_test/image_0007 lfpw_train/image_0862  # poster\nalone\n"))
    assert groups.of("pts:/data/real_300w/lfpw_test/image_0007") == groups.of("pts:/x/lfpw_train/image_0862") == 0
    assert groups.of("pts:/data/real_300w/lfpw_train/image_0007") is None  # another folder's image_0007
    assert groups.of("pts:/data/alone") is None  # a line with one name is no group


def test_real_300w_splits_put_no_near_duplicate_pair_on_two_sides(shared_data: Path):
    folder = shared_data / "real_300w"
    config = DataConfig(
        synthetic="builtin:synthetic?n=40",
        real=f"pts:{folder}?subsets=lfpw_train,helen_train",
        selection=f"pts:{folder}?subsets=lfpw_test",
        tests={"afw": f"pts:{folder}?subsets=afw"},
        groups=str(EXPERIMENTS / "real_300w_near_duplicates.txt"),
        train_size=1000,
        real_fraction=1.0,
        val_size=10,
        val_real_size=224,
        test_size=337,
    )
    result = index_split(config)
    faces = sides(result)
    assert (len(faces["val_real"]), len(faces["test_afw"])) == (224, 337)  # all of LFPW test and AFW
    groups = read_groups((EXPERIMENTS / "real_300w_near_duplicates.txt").read_text())
    assert len(groups) == 32 and sum(map(len, groups)) == 77  # as the data's README counts them
    by_group = Groups(groups)
    for side, ids in faces.items():
        for other, other_ids in faces.items():
            if side < other:
                assert not by_group.kin(ids) & by_group.kin(other_ids), (side, other)
    # The three groups crossing LFPW test and train: their LFPW train faces are not trained on.
    assert not {f"pts:{folder}/lfpw_train/image_{n}" for n in ("0862", "0215", "0828")} & faces["train"]


def test_lines_sharing_a_name_are_one_group():
    groups = Groups(read_groups("a/1 a/2\nb/1 a/2\nc/1 c/2\n"))
    assert groups.of("x/a/1") == groups.of("x/b/1") == groups.of("x/a/2") != groups.of("x/c/1")
