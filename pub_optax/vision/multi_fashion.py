"""Multi-Fashion: two Fashion-MNIST items on one canvas, one classification task per item.

Sener & Koltun (NeurIPS 2018) built MultiMNIST this way and Lin et al. (Pareto MTL, NeurIPS
2019) the Fashion-MNIST version used here: a 28×28 item is put at the top-left of a 36×36
canvas and a second one at the bottom-right, 8 pixels further right and down; where they
overlap the canvas keeps the brighter pixel (pixelwise maximum). Task 0 classifies the top-left
item, task 1 the bottom-right one. The two items of a canvas are drawn at random (seeded) from
the same pool and are never the same image.

Many papers then downscale the canvas to 28×28; here it stays 36×36 (no interpolation, so every
pixel of both items is kept exactly), which :class:`~pub_optax.vision.MultiLeNet` accounts for.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pub_optax.vision.fashion import DEFAULT_DIRECTORY, load_fashion_mnist

__all__ = [
  "OFFSET",
  "TASK_NAMES",
  "MultiTaskImages",
  "make_multi_fashion",
  "multi_fashion_splits",
  "overlay",
]

OFFSET = 8
TASK_NAMES = ("top_left", "bottom_right")


@dataclasses.dataclass(frozen=True, eq=False)
class MultiTaskImages:
  """Row-aligned images and one class label per task (validated on construction).

  Attributes:
    images: float32 ``(N, H, W, C)`` in ``[0, 1]``.
    labels: int32 ``(N, K)``, column ``k`` the class of task ``k``, in ``[0, n_classes)``.
    n_classes: classes per task.
    task_names: one name per label column.

  Example:
    >>> import numpy as np
    >>> data = MultiTaskImages(np.zeros((3, 36, 36, 1), np.float32),
    ...                        np.array([[1, 2], [3, 4], [5, 6]], np.int32))
    >>> len(data), data.n_tasks, data.take(np.array([2])).labels.tolist()
    (3, 2, [[5, 6]])
  """

  images: np.ndarray
  labels: np.ndarray
  n_classes: int = 10
  task_names: tuple[str, ...] = TASK_NAMES

  def __post_init__(self) -> None:
    images = np.asarray(self.images)
    labels = np.asarray(self.labels)
    if images.ndim != 4:
      raise ValueError(f"images: expected (N, H, W, C), got shape {images.shape}")
    if images.dtype.kind != "f":
      raise ValueError(f"images: expected floats in [0, 1], got dtype {images.dtype}")
    images = images.astype(np.float32, copy=False)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
      raise ValueError(f"labels: expected integer (N, K), got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int32, copy=False)
    if len(labels) != len(images):
      raise ValueError(f"labels: {len(labels)} rows for {len(images)} images")
    task_names = tuple(str(t) for t in self.task_names)
    if len(task_names) != labels.shape[1]:
      raise ValueError(f"task_names: {len(task_names)} given for {labels.shape[1]} label columns")
    if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
      raise ValueError(f"labels: values outside [0, {self.n_classes})")
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
      raise ValueError("images: values must be finite and in [0, 1]")
    object.__setattr__(self, "images", images)
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "n_classes", int(self.n_classes))
    object.__setattr__(self, "task_names", task_names)

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def n_tasks(self) -> int:
    """Number of tasks (label columns)."""
    return int(self.labels.shape[1])

  def take(self, index: Any) -> MultiTaskImages:
    """Returns the rows selected by ``index`` (integer array, boolean mask or slice).

    Args:
      index: anything numpy accepts as a row index on axis 0.

    Returns:
      A new `MultiTaskImages` with the same classes and task names.

    Example:
      >>> import numpy as np
      >>> data = MultiTaskImages(np.zeros((4, 2, 2, 1), np.float32), np.zeros((4, 2), np.int32))
      >>> len(data.take(slice(1, 3)))
      2
    """
    if isinstance(index, (int, np.integer)):
      index = np.array([index])
    return MultiTaskImages(self.images[index], self.labels[index], self.n_classes, self.task_names)


def _as_unit_float(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255)
  if images.dtype.kind != "f":
    raise ValueError(f"images: expected uint8 or floats in [0, 1], got dtype {images.dtype}")
  if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
    raise ValueError("images: float images must be finite and in [0, 1]")
  return images.astype(np.float32)


def overlay(top_left: np.ndarray, bottom_right: np.ndarray, offset: int = OFFSET) -> np.ndarray:
  """Puts two batches of square items on one canvas: pixelwise maximum where they overlap.

  Args:
    top_left: ``(N, S, S)`` items placed at canvas rows/columns ``[0, S)``.
    bottom_right: ``(N, S, S)`` items placed at rows/columns ``[offset, offset + S)``.
    offset: shift of the second item, in pixels (8 for Multi-Fashion).

  Returns:
    ``(N, S + offset, S + offset)`` canvases of the inputs' dtype; zero outside both items.

  Example:
    >>> import numpy as np
    >>> canvas = overlay(np.full((1, 2, 2), 3), np.full((1, 2, 2), 5), offset=1)
    >>> canvas[0].tolist()
    [[3, 3, 0], [3, 5, 5], [0, 5, 5]]
  """
  top_left, bottom_right = np.asarray(top_left), np.asarray(bottom_right)
  if (
    top_left.shape != bottom_right.shape
    or top_left.ndim != 3
    or top_left.shape[1] != top_left.shape[2]
  ):
    raise ValueError(
      f"overlay: expected two (N, S, S) batches of the same shape, got "
      f"{top_left.shape} and {bottom_right.shape}"
    )
  if offset < 0:
    raise ValueError(f"overlay: offset must be >= 0, got {offset}")
  n, s, _ = top_left.shape
  dtype = np.result_type(top_left, bottom_right)
  canvas = np.zeros((n, s + offset, s + offset), dtype)
  canvas[:, :s, :s] = top_left
  region = canvas[:, offset:, offset:]
  np.maximum(region, bottom_right, out=region)
  return canvas


def make_multi_fashion(
  images: np.ndarray,
  labels: np.ndarray,
  n: int,
  seed: int | Sequence[int],
  *,
  offset: int = OFFSET,
  n_classes: int = 10,
) -> MultiTaskImages:
  """Composes ``n`` Multi-Fashion examples from a pool of single items.

  For every example two different pool indices ``i != j`` are drawn with
  ``np.random.default_rng(seed)``: each position draws its items without replacement while
  ``n <= M`` (with replacement beyond), and the rare clash ``i == j`` moves ``j`` to a random
  other item. Item ``i`` goes top-left, item ``j`` bottom-right (see :func:`overlay`), and the
  labels are ``(labels[i], labels[j])``.

  Args:
    images: ``(M, S, S)`` items, uint8 (scaled by 1/255) or floats in ``[0, 1]``; ``M >= 2``.
    labels: ``(M,)`` integer classes in ``[0, n_classes)``.
    n: number of examples to make.
    seed: integer (or sequence of integers) seeding the pairing; same seed, same data.
    offset: shift of the bottom-right item (8 gives the 36×36 canvas of 28×28 items).
    n_classes: classes per task.

  Returns:
    :class:`MultiTaskImages` with float32 images ``(n, S + offset, S + offset, 1)`` in
    ``[0, 1]`` and int32 labels ``(n, 2)``: column 0 top-left, column 1 bottom-right.

  Example:
    >>> import numpy as np
    >>> items = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    >>> data = make_multi_fashion(items, np.arange(50) % 10, n=8, seed=0)
    >>> data.images.shape, data.labels.shape
    ((8, 36, 36, 1), (8, 2))
  """
  labels = np.asarray(labels)
  images = np.asarray(images)
  if images.ndim != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images: expected (M, S, S) items, got shape {images.shape}")
  if labels.shape != (len(images),):
    raise ValueError(f"labels: expected shape ({len(images)},), got {labels.shape}")
  if labels.dtype.kind not in "iu":
    raise ValueError(f"labels: expected integer classes, got dtype {labels.dtype}")
  if int(n) != n or n < 0:
    raise ValueError(f"n must be a non-negative integer, got {n!r}")
  n, m = int(n), len(images)
  if m < 2:
    raise ValueError(f"need at least 2 items to pair, got {m}")
  rng = np.random.default_rng(seed)
  first = rng.choice(m, n, replace=n > m)
  second = rng.choice(m, n, replace=n > m)
  same = first == second
  # Shift a clash by a random non-zero amount: the pair stays uniform over i != j.
  second[same] = (second[same] + rng.integers(1, m, int(same.sum()))) % m
  canvas = overlay(_as_unit_float(images[first]), _as_unit_float(images[second]), offset)
  pair_labels = np.stack([labels[first], labels[second]], axis=1).astype(np.int32)
  return MultiTaskImages(canvas[..., None], pair_labels, n_classes, TASK_NAMES)


def multi_fashion_splits(
  directory: str | os.PathLike = DEFAULT_DIRECTORY,
  n_train: int = 10_000,
  n_val: int = 2_000,
  n_test: int = 10_000,
  seed: int = 0,
  *,
  val_pool: int = 10_000,
  data: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, MultiTaskImages]:
  """Train, validation and test Multi-Fashion sets from Fashion-MNIST.

  The 60,000 Fashion-MNIST training images are split once, with ``seed``, into a validation
  pool of ``val_pool`` images and a training pool of the rest; training and validation
  canvases are composed only from their own pool, so no item appears in both. Test canvases
  are composed from the 10,000 Fashion-MNIST test images. Each split uses its own stream of
  ``seed``, so changing ``n_val`` does not change the training set. Lin et al. (2019) used
  120,000 training and 20,000 test canvases without a validation set; the defaults here are
  smaller to train on a CPU in minutes.

  Args:
    directory: Fashion-MNIST folder for :func:`~pub_optax.vision.load_fashion_mnist` (ignored
      when ``data`` is given).
    n_train, n_val, n_test: number of canvases per split (pairs are redrawn with replacement
      beyond the pool size).
    seed: seeds the pool split and the pairing of every split.
    val_pool: training images held out for validation canvases (``2 <= val_pool <= M - 2``).
    data: an already loaded ``{"train": (images, labels), "test": (images, labels)}``, as
      :func:`load_fashion_mnist` returns (e.g. to reuse one load, or synthetic items).

  Returns:
    ``{"train": ..., "val": ..., "test": ...}`` of :class:`MultiTaskImages` with 36×36×1 images.

  Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fake = {s: (rng.integers(0, 256, (m, 28, 28)).astype(np.uint8), np.arange(m) % 10)
    ...         for s, m in (("train", 60), ("test", 20))}
    >>> splits = multi_fashion_splits(n_train=30, n_val=10, n_test=10, val_pool=20, data=fake)
    >>> [len(splits[s]) for s in ("train", "val", "test")]
    [30, 10, 10]
  """
  if data is None:
    data = load_fashion_mnist(directory)
  train_images, train_labels = data["train"]
  test_images, test_labels = data["test"]
  m = len(train_images)
  if not 2 <= val_pool <= m - 2:
    raise ValueError(f"val_pool must be in [2, {m - 2}] for {m} training images, got {val_pool}")
  order = np.random.default_rng([seed, 0]).permutation(m)
  val_idx, train_idx = order[:val_pool], order[val_pool:]
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  return {
    "train": make_multi_fashion(
      train_images[train_idx], train_labels[train_idx], n_train, [seed, 1]
    ),
    "val": make_multi_fashion(train_images[val_idx], train_labels[val_idx], n_val, [seed, 2]),
    "test": make_multi_fashion(test_images, test_labels, n_test, [seed, 3]),
  }
