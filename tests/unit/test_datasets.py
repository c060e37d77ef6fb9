import numpy as np
import pytest
from PIL import Image

from sports_classifier.data_summary import class_counts
from sports_classifier.datasets import discover

from sports_classifier.images import iter_batches

from sports_classifier.training.augmentation import make_tf_dataset
from sports_classifier.errors import DatasetLayoutError

from helpers.datasets import make_dataset


def test_discover_labels_frames_distribution(synthetic_dataset):
    ds = discover(synthetic_dataset)
    assert ds.labels == ("cats", "dogs", "owls")
    assert set(ds.splits) == {"train", "valid"}
    frame = ds.frame("train")
    assert list(frame.columns) == ["filepath", "label", "class_index"]
    assert len(frame) == 18 and frame["class_index"].tolist()[:6] == [0] * 6
    assert class_counts(ds.frame("valid"), ds.labels) == {"cats": 3, "dogs": 3, "owls": 3}
    with pytest.raises(DatasetLayoutError, match="no 'test' split"):
        ds.frame("test")


def test_files_sort_naturally(tmp_path):
    root = make_dataset(tmp_path, per_class=(12, 1))
    names = [p.split("/")[-1] for p in discover(root).frame("train")["filepath"][:12]]
    assert names[:3] == ["1.jpg", "2.jpg", "3.jpg"] and names[-1] == "12.jpg"


def test_missing_folder_and_wrong_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="not found"):
        discover(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.jpg")
    with pytest.raises(DatasetLayoutError, match=r"no split folders.*found \['a.jpg'\].*expected"):
        discover(tmp_path / "flat")


def test_single_split_folder_gets_a_hint(synthetic_dataset):
    with pytest.raises(DatasetLayoutError, match="single split"):
        discover(synthetic_dataset / "train")


def test_empty_class_folder_is_an_error(synthetic_dataset):
    (synthetic_dataset / "train" / "zebras").mkdir()
    with pytest.raises(DatasetLayoutError, match="hold no images.*zebras"):
        discover(synthetic_dataset)


def test_valid_class_missing_from_train_is_an_error(synthetic_dataset):
    (synthetic_dataset / "valid" / "yaks").mkdir()
    Image.new("RGB", (4, 4)).save(synthetic_dataset / "valid" / "yaks" / "1.jpg")
    with pytest.raises(DatasetLayoutError, match="'train' lacks.*yaks"):
        discover(synthetic_dataset)


def test_stray_files_are_ignored_with_a_warning(synthetic_dataset, caplog):
    (synthetic_dataset / "train" / "notes.txt").write_text("x")
    (synthetic_dataset / "train" / "cats" / "Thumbs.db").write_text("x")
    ds = discover(synthetic_dataset)
    assert len(ds.skipped_files) == 2 and "ignoring 2 non-image" in caplog.text
    assert len(ds.frame("train")) == 18


def test_class_subset(synthetic_dataset):
    ds = discover(synthetic_dataset, classes=["owls", "cats"])
    assert ds.labels == ("cats", "owls") and set(ds.frame("train")["label"]) == {"cats", "owls"}
    with pytest.raises(DatasetLayoutError, match="requested classes"):
        discover(synthetic_dataset, classes=["unicorns", "cats"])


def test_batches_skip_and_count_unreadable_images(synthetic_dataset, caplog):
    from sports_classifier.images import SkippedImages

    bad = synthetic_dataset / "train" / "dogs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    paths = discover(synthetic_dataset).frame("train")["filepath"].tolist()
    skipped = SkippedImages()
    batches = list(iter_batches(paths, 16, 8, skipped=skipped))
    assert sum(len(idx) for _, idx in batches) == len(paths) - 1
    assert len(skipped) == 1 and "broken.jpg" in skipped.items[0][0]
    skipped.warn("train")
    assert "skipped 1 unreadable image" in caplog.text


def test_tf_dataset_batches_and_augments(synthetic_dataset):
    from sports_classifier.training.augmentation import augmentation

    frame = discover(synthetic_dataset).frame("train")
    ds = make_tf_dataset(frame, image_size=24, batch_size=32)
    x, y = next(iter(ds))
    assert x.shape == (18, 24, 24, 3) and sorted(np.asarray(y).tolist()) == frame["class_index"].tolist()
    aug = augmentation(zoom=0.2, shift=0.2, horizontal_flip=True, seed=1)
    train_ds = make_tf_dataset(frame, image_size=24, batch_size=32, training=True, augment_layers=aug)
    xa, ya = next(iter(train_ds))
    assert xa.shape == x.shape and not np.allclose(np.sort(np.asarray(xa).ravel()), np.sort(np.asarray(x).ravel()))


def test_batch_augmentation_depends_only_on_the_batch_number():
    """Ray's actors augment the batches of a cached view in any order: each batch must get the
    draws a sequential pass gives it."""
    from sports_classifier.training.augmentation import BatchAugmentation, augmentation

    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (4, 24, 24, 3)).astype(np.float32) for _ in range(3)]
    sequential = augmentation(zoom=0.2, shift=0.2, horizontal_flip=True, seed=5)
    want = [np.asarray(sequential(b, training=True)) for b in batches]
    augment = BatchAugmentation(zoom=0.2, shift=0.2, horizontal_flip=True, seed=5)
    for k in (2, 0, 1, 2):
        np.testing.assert_array_equal(augment(batches[k], k), want[k])
    assert not np.allclose(want[1], augment(batches[1], 0))  # another batch number, other draws
