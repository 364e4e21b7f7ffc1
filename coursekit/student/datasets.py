"""Offline, checksum-verified loaders for Fashion-MNIST and MNIST.

Each loader returns exactly what ``tf.keras.datasets.<name>.load_data()`` returns::

    (x_train, y_train), (x_test, y_test)    # uint8, (60000, 28, 28), (60000,), (10000, 28, 28), (10000,)

Where the IDX files are looked for, first hit wins:

1. ``<folder>/<name>/`` for each folder of ``coursekit.student.datapaths.data_dirs()``
   (``$COURSEKIT_DATA_DIR`` or the offline mirror ``../shared/data``; then ``<repository>/data``;
   installed from the students' wheel, only ``$COURSEKIT_DATA_DIR``);
2. Keras' normal download (``tf.keras.datasets.<name>.load_data()``), which needs internet;
   what Keras returns is verified against the same checksums before it is used.

Each file may be gzipped or not. The SHA-256 of every *uncompressed* payload is verified
against the published value, so a truncated or altered file is refused with a message
that names the file, where it was looked for and how to get a good copy.

Decoding the gzip files takes ~0.4 s per data set; a verified, decoded copy is cached as
``.npy`` under ``datapaths.cache_dir()`` (``$COURSEKIT_CACHE_DIR``, default
``<repository>/.cache/datasets``) so that
later loads (every hidden check loads the test set) take a few milliseconds. The cache key
includes the source file's path, size and modification time, so replacing a file
invalidates its cache entry. ``benchmarks/dataset_loading.py`` measures both paths.

Students get this module in the ``coursekit-student`` wheel (``coursekit/hosting/student_wheel.py``),
outside any checkout of the course: there is no course data folder then, and the cache goes
to the user's cache folder (``$XDG_CACHE_HOME/coursekit/datasets``, default ``~/.cache``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coursekit.student import datapaths
from coursekit.student.datapaths import DATA_DIR_ENV, data_dirs

# SHA-256 of the uncompressed IDX payloads (../shared/data/README.md); stable across
# recompression, so files from Keras' own download verify too.
PAYLOAD_SHA256 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
}

# The order in which load_data() returns the arrays.
SPLITS = (
    ("train-images-idx3-ubyte", (60000, 28, 28)),
    ("train-labels-idx1-ubyte", (60000,)),
    ("t10k-images-idx3-ubyte", (10000, 28, 28)),
    ("t10k-labels-idx1-ubyte", (10000,)),
)

HOW_TO_GET = (
    "To fix it: set {env} to a folder holding '{name}/<file>' (on course machines: "
    "export {env}=$(realpath ../shared/data)), or copy the four IDX files of '{name}' "
    "(gzipped or not, from {source}) into {course_dir}/{name}/."
)
HOW_TO_GET_INSTALLED = (  # the students' wheel: no course folder to copy files into
    "To fix it: connect to the internet so that Keras can download '{name}', or set {env} to a "
    "folder holding '{name}/<file>' (the four IDX files, gzipped or not, from {source})."
)
SOURCES = {
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist or Debian's dataset-fashion-mnist package",
    "mnist": "http://yann.lecun.com/exdb/mnist/",
}


class DatasetError(RuntimeError):
    """A data file is missing, unreadable or does not match its published checksum."""


@dataclass(frozen=True)
class Located:
    path: Path
    searched: tuple[Path, ...]


def _how_to_get(name: str) -> str:
    template = HOW_TO_GET if datapaths.IN_CHECKOUT else HOW_TO_GET_INSTALLED
    return template.format(env=DATA_DIR_ENV, name=name, course_dir=datapaths.COURSE_DATA_DIR, source=SOURCES[name])


def locate(name: str, stem: str) -> Located | None:
    """Find ``<dir>/<name>/<stem>[.gz]`` in the data folders; None if no folder has it."""
    searched = []
    for base in data_dirs():
        for candidate in (base / name / (stem + ".gz"), base / name / stem):
            searched.append(candidate)
            if candidate.is_file():
                return Located(candidate, tuple(searched))
    return None


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Decode one IDX file (gzip or not), verifying the payload's SHA-256 when given."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = gzip.decompress(f.read()) if head == b"\x1f\x8b" else f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"cannot read data file {path}: {err}") from err
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise DatasetError(
                f"data file {path} is corrupt: the SHA-256 of its uncompressed payload is "
                f"{actual}, expected {expected_sha256}."
            )
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"data file {path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DatasetError(f"data file {path} is truncated: header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _cache_path(name: str, stem: str, source: Path) -> Path:
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return datapaths.cache_dir() / name / f"{stem}.{key}.npy"


def _load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == np.uint8 and arr.shape == shape else None


def _store_cached(path: Path, arr: np.ndarray) -> None:
    # Best effort: a read-only cache (a sandboxed kernel, a shared machine) only costs time.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; sandboxed kernels read the cache as another user
        os.replace(tmp, path)
    except OSError:
        pass


def _load_split(name: str, stem: str, shape: tuple[int, ...], use_cache: bool) -> np.ndarray:
    located = locate(name, stem)
    if located is None:
        raise FileNotFoundError  # handled by load(): falls back to Keras
    cache = _cache_path(name, stem, located.path) if use_cache else None
    if cache is not None:
        arr = _load_cached(cache, shape)
        if arr is not None:
            return arr
    arr = read_idx(located.path, PAYLOAD_SHA256[name][stem])
    if arr.shape != shape:
        raise DatasetError(f"data file {located.path} holds shape {arr.shape}, expected {shape}")
    if cache is not None:
        _store_cached(cache, arr)
    return arr


def load(name: str, use_cache: bool = True):
    """Load ``name`` ('fashion-mnist' or 'mnist') as ``((x_train, y_train), (x_test, y_test))``."""
    if name not in PAYLOAD_SHA256:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(PAYLOAD_SHA256)}")
    found = [locate(name, stem) for stem, _ in SPLITS]
    if all(found):
        try:
            arrays = [_load_split(name, stem, shape, use_cache) for stem, shape in SPLITS]
        except DatasetError as err:
            raise DatasetError(f"{err} {_how_to_get(name)}") from None
        return (arrays[0], arrays[1]), (arrays[2], arrays[3])
    if any(found):
        missing = [stem for (stem, _), hit in zip(SPLITS, found) if hit is None]
        searched = [str(d / name) for d in data_dirs()]
        raise DatasetError(
            f"data set '{name}' is incomplete: missing {', '.join(missing)} (.gz or not) "
            f"in {' and '.join(searched)}. {_how_to_get(name)}"
        )
    return _load_with_keras(name)


def idx_header(arr: np.ndarray) -> bytes:
    """The IDX header of an unsigned-byte array: what precedes its pixels in the data files."""
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)


def verify_arrays(name: str, arrays, origin: str) -> None:
    """Check arrays from anywhere but our own files (Keras' download) against the payload
    checksums: an IDX payload is its header and the bytes of the array, so the SHA-256 of the
    array rebuilt as IDX is the published one exactly when every pixel and label is."""
    for (stem, shape), arr in zip(SPLITS, arrays):
        arr = np.asarray(arr)
        if arr.dtype != np.uint8 or arr.shape != shape:
            actual = f"{arr.dtype} array of shape {arr.shape}"
        else:
            digest = hashlib.sha256(idx_header(arr))
            digest.update(np.ascontiguousarray(arr).data)
            if digest.hexdigest() == PAYLOAD_SHA256[name][stem]:
                continue
            actual = f"SHA-256 {digest.hexdigest()}"
        raise DatasetError(
            f"{origin} of '{name}' was refused: its {stem} does not match the published data set "
            f"({actual}, expected uint8 {shape} with SHA-256 {PAYLOAD_SHA256[name][stem]}). "
            f"Keras keeps its downloads in {keras_home() / 'datasets'}: delete the '{name}' files "
            f"there and load again. {_how_to_get(name)}"
        )


def _load_with_keras(name: str):
    import tensorflow as tf  # only on this path: the fast path must not import TensorFlow

    module = {"fashion-mnist": tf.keras.datasets.fashion_mnist, "mnist": tf.keras.datasets.mnist}[name]
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as err:  # Keras raises plain Exception on a failed download
        searched = " and ".join(str(d / name) for d in data_dirs())
        raise DatasetError(
            f"data set '{name}' was not found in {searched}, and Keras could not download "
            f"it ({type(err).__name__}: {err}). {_how_to_get(name)}"
        ) from None
    # Keras checks no hash at all for Fashion-MNIST, and only its own file hash for MNIST.
    verify_arrays(name, (x_train, y_train, x_test, y_test), "Keras' download")
    return (x_train, y_train), (x_test, y_test)


def load_fashion_mnist():
    """Fashion-MNIST, as ``tf.keras.datasets.fashion_mnist.load_data()`` returns it."""
    return load("fashion-mnist")


def load_mnist():
    """MNIST, as ``tf.keras.datasets.mnist.load_data()`` returns it."""
    return load("mnist")


FASHION_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def install_for_keras() -> Path:
    """Put verified Fashion-MNIST files where ``tf.keras.datasets.fashion_mnist`` reads them.

    Keras checks no hash for Fashion-MNIST and reads ``$KERAS_HOME/datasets/fashion-mnist/*.gz``
    before trying to download, so the tutorial's own call then works offline. (MNIST cannot be
    served this way: Keras checks the hash of an ``mnist.npz`` we do not have.)
    """
    target = keras_home() / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for stem, shape in SPLITS:
        located = locate("fashion-mnist", stem)
        if located is None:
            raise DatasetError(f"cannot install Fashion-MNIST for Keras: {stem} not found. "
                               + _how_to_get("fashion-mnist"))
        arr = read_idx(located.path, PAYLOAD_SHA256["fashion-mnist"][stem])
        dest = target / (stem + ".gz")
        if dest.is_file():
            try:
                if read_idx(dest, PAYLOAD_SHA256["fashion-mnist"][stem]).shape == shape:
                    continue
            except DatasetError:
                pass  # a bad copy from an earlier run: replace it
        tmp = dest.with_suffix(".gz.tmp")
        with gzip.open(tmp, "wb", compresslevel=6) as f:
            f.write(idx_header(arr) + arr.tobytes())
        os.replace(tmp, dest)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m coursekit.student.datasets``: verify both data sets, warm the cache, serve Keras."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--install-keras", action="store_true",
                        help="also put Fashion-MNIST where tf.keras.datasets reads it offline")
    args = parser.parse_args(argv)
    try:
        for name in PAYLOAD_SHA256:
            (x_train, _), (x_test, _) = load(name)
            print(f"{name}: verified, {len(x_train)} train / {len(x_test)} test images")
        if args.install_keras:
            print(f"fashion-mnist: Keras copy in {install_for_keras()}")
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
