"""Mini-batches of `RankingData`: from memory, or streamed from a CSV on disk.

Batches are dicts of numpy arrays ``{"categorical": int32 (B, F),
"numerical": float32 (B, D), "labels": float32 (B, T)}``. Shuffling is a pure
function of ``(seed, epoch)``, so a run is reproducible and every epoch sees a
different order. Evaluation keeps the last partial batch (``drop_last=False``,
the default) and pads it with `pad_batch`, whose mask tells the metrics which
rows are real; training may drop it (``drop_last=True``) so a jitted step
always sees the same shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pub_optax.ranking.data.aliexpress import DEFAULT_CHUNK_ROWS, iter_aliexpress_csv
from pub_optax.ranking.data.types import RankingData

__all__ = ["iterate_batches", "num_batches", "pad_batch", "stream_csv_batches"]

Batch = dict[str, np.ndarray]
_KEYS = ("categorical", "numerical", "labels")


def num_batches(n_rows: int, batch_size: int, drop_last: bool = False) -> int:
  """Number of batches `iterate_batches` yields for ``n_rows`` rows.

  Args:
    n_rows: rows in the data.
    batch_size: rows per batch.
    drop_last: whether the last partial batch is dropped.

  Returns:
    The batch count.

  Example:
    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
  """
  return n_rows // batch_size if drop_last else -(-n_rows // batch_size)


def _epoch_rng(seed: int | None, epoch: int, what: str) -> np.random.Generator:
  if seed is None:
    raise ValueError(f"{what}: shuffling needs an integer seed")
  if seed < 0 or epoch < 0:
    raise ValueError(f"{what}: seed and epoch must be non-negative, got {seed}, {epoch}")
  return np.random.default_rng([int(seed), int(epoch)])


def _check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def iterate_batches(
  data: RankingData,
  batch_size: int,
  *,
  shuffle: bool,
  seed: int | None = None,
  epoch: int = 0,
  drop_last: bool = False,
) -> Iterator[Batch]:
  """Yields the rows of ``data`` in batches, optionally shuffled per epoch.

  Args:
    data: the rows.
    batch_size: rows per batch.
    shuffle: permute the rows; the permutation is a function of
      ``(seed, epoch)`` only.
    seed: required when shuffling.
    epoch: epoch number, so each epoch has its own order.
    drop_last: drop a last partial batch (for static shapes in training);
      evaluation should keep it (the default) and use `pad_batch`.

  Returns:
    An iterator of batch dicts (numpy arrays; copies when shuffled, views
    otherwise).

  Example:
    >>> from pub_optax.ranking.data.synthetic import generate_aliexpress
    >>> data = generate_aliexpress(10, seed=0)
    >>> [len(b["labels"]) for b in iterate_batches(data, 4, shuffle=True, seed=0)]
    [4, 4, 2]
  """
  _check_batch_size(batch_size)
  n = len(data)
  order = _epoch_rng(seed, epoch, "iterate_batches").permutation(n) if shuffle else None
  stop = n - n % batch_size if drop_last else n
  for start in range(0, stop, batch_size):
    index = slice(start, min(start + batch_size, n))
    if order is not None:
      index = order[index]
    yield {key: getattr(data, key)[index] for key in _KEYS}


def pad_batch(batch: Batch, batch_size: int) -> tuple[Batch, np.ndarray]:
  """Pads a batch with zero rows to ``batch_size`` and returns the mask of real rows.

  Padding rows have id 0 (a valid id), zero features and zero labels, so a
  jitted evaluation step runs on them unchanged; pass the mask to the metrics
  so they are ignored.

  Args:
    batch: a batch dict with at most ``batch_size`` rows.
    batch_size: the static batch size.

  Returns:
    ``(padded_batch, mask)`` with ``mask`` a boolean ``(batch_size,)`` array.

  Example:
    >>> import numpy as np
    >>> batch = {"categorical": np.ones((3, 2), np.int32),
    ...          "numerical": np.ones((3, 1), np.float32),
    ...          "labels": np.ones((3, 2), np.float32)}
    >>> padded, mask = pad_batch(batch, 4)
    >>> padded["categorical"].shape, mask.tolist()
    ((4, 2), [True, True, True, False])
  """
  _check_batch_size(batch_size)
  sizes = {key: len(value) for key, value in batch.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"pad_batch: arrays have different row counts {sizes}")
  n = next(iter(sizes.values()))
  if n > batch_size:
    raise ValueError(f"pad_batch: batch has {n} rows, more than batch_size {batch_size}")
  mask = np.arange(batch_size) < n
  if n == batch_size:
    return dict(batch), mask
  padded = {}
  for key, value in batch.items():
    out = np.zeros((batch_size, *value.shape[1:]), value.dtype)
    out[:n] = value
    padded[key] = out
  return padded, mask


class _Buffer:
  """A bounded pool of rows supporting O(batch) random removal."""

  def __init__(self, capacity: int, widths: dict[str, tuple[int, np.dtype]]):
    self.arrays = {key: np.empty((capacity, w), dtype) for key, (w, dtype) in widths.items()}
    self.size = 0

  def append(self, rows: dict[str, np.ndarray]) -> None:
    n = len(rows["labels"])
    for key, array in self.arrays.items():
      array[self.size : self.size + n] = rows[key]
    self.size += n

  def take_random(self, rng: np.random.Generator, count: int) -> Batch:
    picked = rng.choice(self.size, size=count, replace=False)
    batch = {key: array[picked] for key, array in self.arrays.items()}
    # Fill the holes left below the new end with the unpicked rows above it.
    new_size = self.size - count
    holes = np.sort(picked[picked < new_size])
    tail = np.ones(count, bool)
    tail[picked[picked >= new_size] - new_size] = False
    movers = new_size + np.flatnonzero(tail)
    for array in self.arrays.values():
      array[holes] = array[movers]
    self.size = new_size
    return batch

  def drain(self, rng: np.random.Generator | None) -> Batch:
    order = rng.permutation(self.size) if rng is not None else slice(0, self.size)
    batch = {key: array[order] for key, array in self.arrays.items()}
    self.size = 0
    return batch


def stream_csv_batches(
  path,
  batch_size: int,
  cardinalities: Sequence[int],
  *,
  shuffle_buffer: int,
  seed: int | None,
  epoch: int = 0,
  drop_last: bool = False,
  chunk_rows: int = DEFAULT_CHUNK_ROWS,
  on_bad_labels: str = "raise",
) -> Iterator[Batch]:
  """Streams batches from a processed AliExpress CSV without loading the file.

  Rows are read ``chunk_rows`` lines at a time into a buffer of at most
  ``shuffle_buffer + chunk_rows`` rows. While the buffer holds at least
  ``shuffle_buffer + batch_size`` rows, a batch is drawn uniformly without
  replacement from it (like ``tf.data``'s shuffle buffer, vectorised); at the
  end of the file the rest is permuted and emitted. Every row is yielded
  exactly once per epoch; the order is a function of ``(seed, epoch)``.
  ``shuffle_buffer <= 1`` keeps file order (no seed needed).

  Args:
    path: processed AliExpress CSV.
    batch_size: rows per batch.
    cardinalities: table sizes shared with the model (ids beyond them raise).
    shuffle_buffer: rows kept for shuffling; larger mixes better.
    seed: shuffling seed (required when ``shuffle_buffer > 1``).
    epoch: epoch number.
    drop_last: drop a last partial batch.
    chunk_rows: lines parsed per read.
    on_bad_labels: passed to `iter_aliexpress_csv`.

  Returns:
    An iterator of batch dicts.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.synthetic import generate_aliexpress, write_aliexpress_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> data = generate_aliexpress(1000, seed=0)
    >>> write_aliexpress_csv(data, path)
    >>> batches = stream_csv_batches(path, 256, data.cardinalities, shuffle_buffer=500,
    ...                              seed=0, chunk_rows=300)
    >>> sum(len(b["labels"]) for b in batches)
    1000
  """
  _check_batch_size(batch_size)
  shuffled = shuffle_buffer > 1
  rng = _epoch_rng(seed, epoch, "stream_csv_batches") if shuffled else None
  target = max(shuffle_buffer, 0) + batch_size
  buffer: _Buffer | None = None
  pending: Batch | None = None  # in-order mode: leftover rows smaller than a batch

  for chunk in iter_aliexpress_csv(
    path, chunk_rows, cardinalities=cardinalities, on_bad_labels=on_bad_labels
  ):
    rows = {key: getattr(chunk, key) for key in _KEYS}
    if not shuffled:
      if pending is not None:
        rows = {key: np.concatenate([pending[key], rows[key]]) for key in _KEYS}
      n = len(rows["labels"])
      full = n - n % batch_size
      for start in range(0, full, batch_size):
        yield {key: rows[key][start : start + batch_size] for key in _KEYS}
      pending = {key: rows[key][full:] for key in _KEYS}
      continue
    if buffer is None:
      widths = {key: (value.shape[1], value.dtype) for key, value in rows.items()}
      buffer = _Buffer(target + chunk_rows, widths)
    buffer.append(rows)
    while buffer.size >= target:
      yield buffer.take_random(rng, batch_size)

  rest = pending if not shuffled else (buffer.drain(rng) if buffer is not None else None)
  if rest is None:
    return
  n = len(rest["labels"])
  stop = n - n % batch_size if drop_last else n
  for start in range(0, stop, batch_size):
    yield {key: rest[key][start : start + batch_size] for key in _KEYS}
