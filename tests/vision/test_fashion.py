"""Fashion-MNIST idx reading and the Multi-Fashion composition (pub_optax.vision)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pub_optax import vision
from pub_optax.vision.fashion import DEFAULT_DIRECTORY, FILES

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def write_idx(path: Path, array: np.ndarray, compress: bool = True, code: int = 0x08) -> Path:
  """Writes ``array`` exactly as the idx format (big-endian header), gzip-compressed or plain."""
  big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
  raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  raw += np.ascontiguousarray(array, big).tobytes()
  write_raw(path, raw, compress)
  return path


def write_raw(path: Path, raw: bytes, compress: bool = True) -> None:
  with gzip.open(path, "wb") if compress else open(path, "wb") as f:
    f.write(raw)


def fake_fashion(directory: Path, n_train=12, n_test=5, seed=0, compress=True) -> dict:
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    suffix = ".gz" if compress else ""
    image_stem, label_stem = FILES[split]
    write_idx(directory / (image_stem + suffix), images, compress)
    write_idx(directory / (label_stem + suffix), labels, compress)
    out[split] = (images, labels)
  return out


# ---------------------------------------------------------------------------- read_idx


def test_header_matches_real_format(tmp_path):
  path = write_idx(tmp_path / "x-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
  with gzip.open(path) as f:
    head = f.read(16)
  assert struct.unpack(">IIII", head) == (IMAGES_MAGIC, 2, 28, 28)
  path = write_idx(tmp_path / "y-idx1-ubyte.gz", np.zeros(3, np.uint8))
  with gzip.open(path) as f:
    assert struct.unpack(">II", f.read(8)) == (LABELS_MAGIC, 3)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_images_and_labels(tmp_path, compress):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (7, 28, 28)).astype(np.uint8)
  labels = rng.integers(0, 10, 7).astype(np.uint8)
  got_images = vision.read_idx(write_idx(tmp_path / "i", images, compress))
  got_labels = vision.read_idx(write_idx(tmp_path / "l", labels, compress))
  assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
  "code,dtype",
  [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_other_types_in_native_byte_order(tmp_path, code, dtype):
  array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
  got = vision.read_idx(write_idx(tmp_path / "a.gz", array, code=code))
  assert got.dtype == np.dtype(dtype) and got.dtype.isnative
  np.testing.assert_array_equal(got, array)


def test_read_idx_empty_array(tmp_path):
  got = vision.read_idx(write_idx(tmp_path / "e.gz", np.zeros((0, 28, 28), np.uint8)))
  assert got.shape == (0, 28, 28)


def test_read_idx_missing_file_names_path(tmp_path):
  path = tmp_path / "nope-idx1-ubyte.gz"
  with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte.gz"):
    vision.read_idx(path)


def _header(code=0x08, dims=(3,)):
  return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
  "raw,message",
  [
    (b"\x00\x00", "too short"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    (b"\x00\x05\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    (_header(code=0x07) + b"\x00\x00\x00", "element type 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated idx header"),
    (_header(dims=(3,)) + b"\x00\x00", "2 data bytes"),
    (_header(dims=(3,)) + b"\x00\x00\x00\x00", "4 data bytes"),
    (_header(code=0x0C, dims=(2,)) + b"\x00" * 7, "need 8"),
    (_header(dims=(2, 28, 28)) + b"\x00" * (2 * 28 * 28 - 1), "need 1568"),
  ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_malformed_names_file(tmp_path, raw, message, compress):
  path = tmp_path / "bad-idx-ubyte"
  write_raw(path, raw, compress)
  with pytest.raises(ValueError, match=message) as info:
    vision.read_idx(path)
  assert "bad-idx-ubyte" in str(info.value)


def test_read_idx_corrupt_gzip_names_file(tmp_path):
  path = tmp_path / "broken.gz"
  good = gzip.compress(_header(dims=(100,)) + bytes(100))
  path.write_bytes(good[: len(good) // 2])  # truncated gzip stream
  with pytest.raises(ValueError, match="broken.gz"):
    vision.read_idx(path)
  path.write_bytes(b"\x1f\x8b" + b"garbage" * 5)
  with pytest.raises(ValueError, match="broken.gz"):
    vision.read_idx(path)


# ---------------------------------------------------------------------------- load_fashion_mnist


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_from_folder(tmp_path, compress):
  expected = fake_fashion(tmp_path, compress=compress)
  data = vision.load_fashion_mnist(tmp_path)
  assert sorted(data) == ["test", "train"]
  for split, (images, labels) in expected.items():
    got_images, got_labels = data[split]
    assert got_images.dtype == np.uint8 and got_images.shape == images.shape
    assert got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_load_fashion_mnist_missing_folder_says_how_to_install(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
    vision.load_fashion_mnist(tmp_path / "absent")
  assert "absent" in str(info.value) and "directory=" in str(info.value)


def test_load_fashion_mnist_missing_file_is_named(tmp_path):
  fake_fashion(tmp_path)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
    vision.load_fashion_mnist(tmp_path)
  assert "apt-get install dataset-fashion-mnist" in str(info.value)
  assert "train-images" not in str(info.value)


def test_load_fashion_mnist_inconsistent_files(tmp_path):
  fake_fashion(tmp_path)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
  with pytest.raises(ValueError, match="11 labels for 12 images"):
    vision.load_fashion_mnist(tmp_path)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
  with pytest.raises(ValueError, match="labels >= 10"):
    vision.load_fashion_mnist(tmp_path)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(12, np.uint8))
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 27, 28), np.uint8))
  with pytest.raises(ValueError, match=r"t10k-images.*\(N, 28, 28\)"):
    vision.load_fashion_mnist(tmp_path)
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.int32), code=0x0C)
  with pytest.raises(ValueError, match="uint8"):
    vision.load_fashion_mnist(tmp_path)


@pytest.mark.skipif(
  not os.path.isdir(DEFAULT_DIRECTORY), reason="dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist():
  data = vision.load_fashion_mnist()
  (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
  assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
  assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
  assert train_x.dtype == np.uint8
  for labels in (train_y, test_y):
    assert labels.min() == 0 and labels.max() == 9
    assert np.all(np.bincount(labels, minlength=10) == len(labels) // 10)  # balanced classes


# ---------------------------------------------------------------------------- Multi-Fashion


def tagged_items(m: int, first_id: int = 0, seed: int = 0) -> np.ndarray:
  """Random uint8 items whose corner pixels (0, 0) and (27, 27) hold the item's id."""
  items = np.random.default_rng(seed).integers(0, 256, (m, 28, 28)).astype(np.uint8)
  ids = np.arange(first_id, first_id + m, dtype=np.uint8)
  items[:, 0, 0] = ids
  items[:, 27, 27] = ids
  return items


def identities(data: vision.MultiTaskImages) -> tuple[np.ndarray, np.ndarray]:
  """The ids of the top-left and bottom-right items (their tagged corners are never overlapped)."""
  pixels = np.rint(data.images[..., 0] * 255).astype(np.int64)
  return pixels[:, 0, 0], pixels[:, 35, 35]


def test_overlay_positions_and_max():
  a = np.arange(1, 10).reshape(1, 3, 3)
  b = np.full((1, 3, 3), 5)
  canvas = vision.overlay(a, b, offset=2)[0]
  assert canvas.tolist() == [
    [1, 2, 3, 0, 0],
    [4, 5, 6, 0, 0],
    [7, 8, 9, 5, 5],
    [0, 0, 5, 5, 5],
    [0, 0, 5, 5, 5],
  ]
  with pytest.raises(ValueError, match="same shape"):
    vision.overlay(np.zeros((1, 3, 3)), np.zeros((1, 3, 4)))


def test_make_multi_fashion_composition_exact():
  m = 30
  items = tagged_items(m)
  labels = np.arange(m) % 10
  data = vision.make_multi_fashion(items, labels, n=25, seed=3)
  assert data.images.shape == (25, 36, 36, 1) and data.images.dtype == np.float32
  assert data.labels.shape == (25, 2) and data.labels.dtype == np.int32
  assert data.task_names == ("top_left", "bottom_right")
  first, second = identities(data)
  assert np.all(first != second)
  assert len(set(first.tolist())) == 25 and len(set(second.tolist())) <= 25
  for row, (i, j) in enumerate(zip(first, second)):
    reference = np.zeros((36, 36), np.float32)
    reference[:28, :28] = items[i] / np.float32(255)
    reference[8:, 8:] = np.maximum(reference[8:, 8:], items[j] / np.float32(255))
    canvas = data.images[row, ..., 0]
    np.testing.assert_array_equal(canvas, reference)
    np.testing.assert_array_equal(canvas[:8, :28], items[i, :8] / np.float32(255))  # only item i
    np.testing.assert_array_equal(canvas[8:, 28:], items[j, :, 20:] / np.float32(255))  # only j
    assert not canvas[28:, :8].any() and not canvas[:8, 28:].any()  # empty corners
    np.testing.assert_array_equal(
      canvas[8:28, 8:28], np.maximum(items[i, 8:, 8:], items[j, :20, :20]) / np.float32(255)
    )
    assert data.labels[row].tolist() == [labels[i], labels[j]]


def test_make_multi_fashion_seeded():
  items, labels = tagged_items(40), np.arange(40) % 10
  a = vision.make_multi_fashion(items, labels, 20, seed=7)
  b = vision.make_multi_fashion(items, labels, 20, seed=7)
  c = vision.make_multi_fashion(items, labels, 20, seed=8)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(identities(a)[0], identities(c)[0])


def test_make_multi_fashion_more_examples_than_items_and_floats():
  items = tagged_items(5)
  data = vision.make_multi_fashion(items, np.arange(5), 200, seed=0)
  first, second = identities(data)
  assert np.all(first != second) and set(first.tolist()) == set(range(5))
  as_float = vision.make_multi_fashion(items / np.float32(255), np.arange(5), 200, seed=0)
  np.testing.assert_allclose(as_float.images, data.images, atol=1e-7)


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(images=np.zeros((1, 28, 28), np.uint8), labels=np.zeros(1, int)), "at least 2"),
    (dict(images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(3, int)), "labels"),
    (dict(images=np.zeros((4, 28, 27), np.uint8), labels=np.zeros(4, int)), r"\(M, S, S\)"),
    (dict(images=np.full((4, 28, 28), 2.0), labels=np.zeros(4, int)), r"\[0, 1\]"),
    (dict(images=np.zeros((4, 28, 28), np.int16), labels=np.zeros(4, int)), "uint8"),
    (dict(images=np.zeros((4, 28, 28), np.uint8), labels=np.full(4, 10)), "outside"),
  ],
)
def test_make_multi_fashion_rejects_bad_input(kwargs, message):
  with pytest.raises(ValueError, match=message):
    vision.make_multi_fashion(n=3, seed=0, **kwargs)


def test_multi_task_images_validates():
  with pytest.raises(ValueError, match="3 rows for 2 images"):
    vision.MultiTaskImages(np.zeros((2, 4, 4, 1), np.float32), np.zeros((3, 2), np.int32))
  with pytest.raises(ValueError, match="task_names"):
    vision.MultiTaskImages(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 3), np.int32))
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    vision.MultiTaskImages(np.zeros((2, 4, 4), np.float32), np.zeros((2, 2), np.int32))


def test_multi_fashion_splits_pools():
  rng = np.random.default_rng(0)
  data = {
    "train": (tagged_items(120, 0), rng.integers(0, 10, 120)),
    "test": (tagged_items(40, 200), rng.integers(0, 10, 40)),
  }
  splits = vision.multi_fashion_splits(
    n_train=90, n_val=30, n_test=35, seed=1, val_pool=30, data=data
  )
  assert {k: len(v) for k, v in splits.items()} == {"train": 90, "val": 30, "test": 35}
  ids = {k: set(np.concatenate(identities(v)).tolist()) for k, v in splits.items()}
  assert not ids["train"] & ids["val"]  # validation items are held out of training
  assert max(ids["train"] | ids["val"]) < 120 and min(ids["test"]) >= 200
  assert len(ids["val"]) <= 30
  for name, split in splits.items():  # labels follow the items
    source_labels = data["test" if name == "test" else "train"][1]
    first, second = identities(split)
    offset = 200 if name == "test" else 0
    np.testing.assert_array_equal(split.labels[:, 0], source_labels[first - offset])
    np.testing.assert_array_equal(split.labels[:, 1], source_labels[second - offset])
  again = vision.multi_fashion_splits(
    n_train=90, n_val=10, n_test=35, seed=1, val_pool=30, data=data
  )
  np.testing.assert_array_equal(again["train"].images, splits["train"].images)
  np.testing.assert_array_equal(again["test"].labels, splits["test"].labels)
  with pytest.raises(ValueError, match="val_pool"):
    vision.multi_fashion_splits(val_pool=119, data=data)


def test_multi_fashion_splits_reads_directory(tmp_path):
  fake_fashion(tmp_path, n_train=30, n_test=10)
  splits = vision.multi_fashion_splits(tmp_path, n_train=8, n_val=4, n_test=6, val_pool=10)
  assert splits["val"].images.shape == (4, 36, 36, 1)
  with pytest.raises(FileNotFoundError, match="apt-get"):
    vision.multi_fashion_splits(tmp_path / "absent")
