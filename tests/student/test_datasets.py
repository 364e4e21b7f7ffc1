"""coursekit.student.datasets: the offline loaders return what Keras returns, verify every file,
and fail with a message that says which file, where, and what to do."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from coursekit.student import datapaths, datasets
from coursekit.student.datasets import DatasetError, load, load_fashion_mnist, load_mnist

SHARED = datapaths.data_dirs()[0]  # where this machine's data is (tests/conftest.py checks there is some)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private data folder (symlinks to the real files) searched first, with its own cache;
    the course folder and the offline mirror are empty folders."""
    for name in ("fashion-mnist", "mnist"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for f in (SHARED / name).iterdir():
            (tmp_path / "data" / name / f.name).symlink_to(f)
    monkeypatch.setenv(datapaths.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(datapaths.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(datapaths, "COURSE_DATA_DIR", tmp_path / "course-data")
    monkeypatch.setattr(datapaths, "MIRROR", tmp_path / "mirror")
    return tmp_path / "data"


def replace_payload(path: Path, payload: bytes) -> None:
    path.unlink()
    with gzip.open(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("loader", [load_fashion_mnist, load_mnist])
def test_loaders_return_keras_structure(loader, data_dir):
    (x_train, y_train), (x_test, y_test) = loader()
    assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert set(np.unique(y_test)) == set(range(10)) and x_train.max() == 255


def test_fashion_mnist_equals_keras_own_loader_offline(data_dir):
    """After set-up, tf.keras' loader reads the copies set-up installed, and agrees with ours."""
    import tensorflow as tf

    ours = load_fashion_mnist()
    theirs = tf.keras.datasets.fashion_mnist.load_data()
    for our_split, their_split in zip(ours, theirs):
        for a, b in zip(our_split, their_split):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_corrupt_file_is_refused_with_a_clear_message(data_dir):
    labels = data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # one label changed: still a valid IDX file
    replace_payload(labels, bytes(payload))
    with pytest.raises(DatasetError) as err:
        load_mnist()
    message = str(err.value)
    assert str(labels) in message and "corrupt" in message and "SHA-256" in message
    assert datapaths.DATA_DIR_ENV in message and "mnist" in message  # how to get a good copy


def test_truncated_gzip_is_refused(data_dir):
    images = data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    data = images.read_bytes()
    images.unlink()
    images.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cannot read data file .*t10k-images"):
        load_fashion_mnist()


def test_missing_file_names_the_file_and_the_folders_searched(data_dir):
    (data_dir / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_mnist()
    message = str(err.value)
    assert "train-labels-idx1-ubyte" in message and str(data_dir / "mnist") in message
    assert "To fix it" in message


def test_uncompressed_files_are_accepted(data_dir):
    labels = data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.unlink()
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(raw)
    (_, _), (_, y_test) = load_mnist()
    assert y_test.shape == (10000,)


def test_environment_folder_comes_before_the_course_folder(data_dir, monkeypatch, tmp_path):
    course = tmp_path / "course-data" / "mnist"
    course.mkdir(parents=True)
    for f in (data_dir / "mnist").iterdir():
        (course / f.name).write_bytes(b"not an idx file")  # would fail if it were read
    load_mnist()
    monkeypatch.delenv(datapaths.DATA_DIR_ENV)
    with pytest.raises(DatasetError, match=str(course)):
        load_mnist()


def test_offline_mirror_stands_in_for_an_unset_environment_folder(data_dir, monkeypatch, tmp_path):
    """bin/_env used to point COURSEKIT_DATA_DIR at ../shared/data; the look-up now does it itself."""
    monkeypatch.delenv(datapaths.DATA_DIR_ENV)
    monkeypatch.setattr(datapaths, "MIRROR", data_dir)
    assert datapaths.data_dirs() == [data_dir, datapaths.COURSE_DATA_DIR]
    load_mnist()
    monkeypatch.setenv(datapaths.DATA_DIR_ENV, str(tmp_path / "elsewhere"))  # an explicit folder wins
    assert datapaths.data_dirs() == [tmp_path / "elsewhere", datapaths.COURSE_DATA_DIR]


def test_cache_is_used_and_invalidated_when_the_file_changes(data_dir, tmp_path):
    load_mnist()
    cached = sorted((tmp_path / "cache" / "mnist").glob("*.npy"))
    assert len(cached) == 4
    labels = data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10
    replace_payload(labels, bytes(payload))  # new mtime and size: the cache must not hide it
    with pytest.raises(DatasetError, match="corrupt"):
        load_mnist()


def test_no_data_anywhere_falls_back_to_keras_and_explains(monkeypatch, tmp_path):
    monkeypatch.setenv(datapaths.DATA_DIR_ENV, str(tmp_path / "nothing"))
    monkeypatch.setattr(datapaths, "COURSE_DATA_DIR", tmp_path / "nothing-either")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    called = []

    def keras_offline(name):
        called.append(name)
        raise DatasetError(f"data set '{name}' was not found ... To fix it: ...")

    monkeypatch.setattr(datasets, "_load_with_keras", keras_offline)
    with pytest.raises(DatasetError, match="To fix it"):
        load("mnist")
    assert called == ["mnist"]


def test_command_line_verifies_both_sets(data_dir, capsys):
    assert datasets.main([]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: verified" in out and "mnist: verified" in out
