"""Fashion-MNIST from its original idx files (gzip or plain), read without network access.

The Debian package ``dataset-fashion-mnist`` installs the four files of Xiao, Rasul & Vollgraf
(2017) under ``/usr/share/datasets/fashion-mnist/``: 60,000 training and 10,000 test grey-level
28×28 images of ten clothing classes. :func:`read_idx` parses one idx file and checks it
completely (magic number, element type, dimensions, byte count), so a truncated download or a
wrong file raises ``ValueError`` naming the file instead of returning garbage.

idx format (big-endian): two zero bytes, one type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B``
int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), one byte with the number of
dimensions, one uint32 per dimension, then the elements in C order. Fashion-MNIST images have
magic ``0x00000803`` (uint8, 3-D) and labels ``0x00000801`` (uint8, 1-D).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["CLASS_NAMES", "DEFAULT_DIRECTORY", "FILES", "load_fashion_mnist", "read_idx"]

DEFAULT_DIRECTORY = "/usr/share/datasets/fashion-mnist"

CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)

# split -> (images file, labels file), without the optional ".gz".
FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {
  0x08: np.dtype(np.uint8),
  0x09: np.dtype(np.int8),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}

_INSTALL_HINT = (
  "install it with `sudo apt-get install dataset-fashion-mnist`, or pass "
  "directory= a folder holding the four idx files (optionally .gz)"
)


def _read_bytes(path: Path) -> bytes:
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] != b"\x1f\x8b":  # not gzip: a plain idx file
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as err:
    raise ValueError(f"{path}: corrupt gzip stream ({err})") from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one idx file (gzip-compressed or plain, detected from its content).

  Args:
    path: the file, e.g. ``".../train-images-idx3-ubyte.gz"``.

  Returns:
    A numpy array with the file's shape, in native byte order (``uint8`` for Fashion-MNIST).

  Raises:
    FileNotFoundError: ``path`` does not exist (the message names it).
    ValueError: the content is not a valid idx file: bad magic number, unknown element type,
      no dimensions, or a byte count that does not match the dimensions (the message names
      the file).

  Example:
    >>> import gzip, struct, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with gzip.open(path, "wb") as f:
    ...   _ = f.write(struct.pack(">II", 0x00000801, 3) + bytes([7, 0, 9]))
    >>> read_idx(path).tolist()
    [7, 0, 9]
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"idx file not found: {path}")
  raw = _read_bytes(path)
  if len(raw) < 4:
    raise ValueError(f"{path}: {len(raw)} bytes, too short for an idx header")
  if raw[0] != 0 or raw[1] != 0:
    raise ValueError(
      f"{path}: bad idx magic number 0x{raw[:4].hex()} (must start with two "
      "zero bytes); is this an idx file?"
    )
  code, ndim = raw[2], raw[3]
  if code not in _IDX_DTYPES:
    raise ValueError(f"{path}: unknown idx element type 0x{code:02x} (magic 0x{raw[:4].hex()})")
  if ndim < 1:
    raise ValueError(f"{path}: idx header declares 0 dimensions")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(
      f"{path}: truncated idx header ({len(raw)} bytes, {ndim} dimensions need {header})"
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(
      f"{path}: {len(raw) - header} data bytes but dimensions {shape} of "
      f"{dtype.name} need {expected}"
    )
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="), copy=True)


def _find(directory: Path, stem: str) -> Path | None:
  for name in (stem + ".gz", stem):
    if (directory / name).is_file():
      return directory / name
  return None


def load_fashion_mnist(directory: str | os.PathLike = DEFAULT_DIRECTORY) -> dict:
  """Loads the Fashion-MNIST training and test sets from a folder of idx files.

  Args:
    directory: folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``
      (default: where the Debian package ``dataset-fashion-mnist`` installs them).

  Returns:
    ``{"train": (images, labels), "test": (images, labels)}`` with ``images`` uint8
    ``(N, 28, 28)`` (0 = background) and ``labels`` int32 ``(N,)`` in ``[0, 10)``, see
    :data:`CLASS_NAMES`. The real data has 60,000 training and 10,000 test images.

  Raises:
    FileNotFoundError: the folder or one of the files is missing; the message says how to
      install the data.
    ValueError: a file is malformed, or images and labels disagree (count, shape, range).

  Example:
    >>> import os
    >>> if os.path.isdir(DEFAULT_DIRECTORY):
    ...   data = load_fashion_mnist()
    ...   assert data["train"][0].shape == (60000, 28, 28)
  """
  directory = Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"Fashion-MNIST folder not found: {directory}; {_INSTALL_HINT}")
  stems = [stem for pair in FILES.values() for stem in pair]
  missing = [stem for stem in stems if _find(directory, stem) is None]
  if missing:
    raise FileNotFoundError(
      f"Fashion-MNIST files missing in {directory}: "
      f"{', '.join(s + '[.gz]' for s in missing)}; {_INSTALL_HINT}"
    )
  out = {}
  for split, (image_stem, label_stem) in FILES.items():
    image_path, label_path = _find(directory, image_stem), _find(directory, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
      raise ValueError(
        f"{image_path}: expected uint8 images of shape (N, 28, 28), got "
        f"{images.dtype} {images.shape}"
      )
    if labels.dtype != np.uint8 or labels.ndim != 1:
      raise ValueError(
        f"{label_path}: expected a uint8 vector of labels, got {labels.dtype} {labels.shape}"
      )
    if len(labels) != len(images):
      raise ValueError(
        f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}"
      )
    if len(labels) and labels.max() >= len(CLASS_NAMES):
      raise ValueError(
        f"{label_path}: {int((labels >= len(CLASS_NAMES)).sum())} labels >= {len(CLASS_NAMES)}"
      )
    out[split] = (images, labels.astype(np.int32))
  return out
