"""In-memory and streaming batches: coverage, determinism, shapes, padding."""

import numpy as np
import pytest

from pub_optax.ranking.data.batching import (
  iterate_batches,
  num_batches,
  pad_batch,
  stream_csv_batches,
)
from pub_optax.ranking.data.synthetic import generate_aliexpress, write_aliexpress_csv
from pub_optax.ranking.data.types import RankingData


def _tagged(n, n_categorical=3):
  """Rows whose numerical column 0 is the row number (exact in float32 below 2**24)."""
  rng = np.random.default_rng(0)
  return RankingData(
    categorical=rng.integers(0, 5, (n, n_categorical)).astype(np.int32),
    numerical=np.stack([np.arange(n), rng.random(n)], 1).astype(np.float32),
    labels=(rng.random((n, 2)) < 0.3).astype(np.float32),
    cardinalities=(5,) * n_categorical,
    task_names=("ctr", "ctcvr"),
  )


def _ids(batches):
  return np.concatenate([b["numerical"][:, 0] for b in batches]).astype(np.int64)


def test_every_row_once_per_epoch_with_per_epoch_orders():
  data = _tagged(103)
  epoch0 = list(iterate_batches(data, 10, shuffle=True, seed=1, epoch=0))
  assert [len(b["labels"]) for b in epoch0] == [10] * 10 + [3]
  assert sorted(_ids(epoch0)) == list(range(103))
  again = list(iterate_batches(data, 10, shuffle=True, seed=1, epoch=0))
  np.testing.assert_array_equal(_ids(epoch0), _ids(again))
  epoch1 = _ids(iterate_batches(data, 10, shuffle=True, seed=1, epoch=1))
  other_seed = _ids(iterate_batches(data, 10, shuffle=True, seed=2, epoch=0))
  assert sorted(epoch1) == list(range(103))
  assert not np.array_equal(_ids(epoch0), epoch1) and not np.array_equal(_ids(epoch0), other_seed)


def test_batch_rows_stay_aligned_and_dtypes():
  data = _tagged(50)
  for batch in iterate_batches(data, 8, shuffle=True, seed=0):
    rows = batch["numerical"][:, 0].astype(int)
    np.testing.assert_array_equal(batch["categorical"], data.categorical[rows])
    np.testing.assert_array_equal(batch["labels"], data.labels[rows])
    assert batch["categorical"].dtype == np.int32 and batch["numerical"].dtype == np.float32
    assert batch["labels"].dtype == np.float32


def test_in_order_and_drop_last():
  data = _tagged(23)
  assert _ids(iterate_batches(data, 5, shuffle=False)).tolist() == list(range(23))
  dropped = list(iterate_batches(data, 5, shuffle=True, seed=0, drop_last=True))
  assert [len(b["labels"]) for b in dropped] == [5] * 4 == [5] * num_batches(23, 5, drop_last=True)
  assert num_batches(23, 5) == 5 and num_batches(20, 5) == 4
  with pytest.raises(ValueError, match="seed"):
    list(iterate_batches(data, 5, shuffle=True))
  with pytest.raises(ValueError, match="batch_size"):
    list(iterate_batches(data, 0, shuffle=False))


def test_pad_batch_pads_with_zeros_and_masks():
  data = _tagged(7)
  batch = next(iterate_batches(data, 7, shuffle=False))
  padded, mask = pad_batch(batch, 10)
  assert mask.tolist() == [True] * 7 + [False] * 3
  for key, value in batch.items():
    assert padded[key].shape == (10, *value.shape[1:]) and padded[key].dtype == value.dtype
    np.testing.assert_array_equal(padded[key][:7], value)
    assert not padded[key][7:].any()
  full, full_mask = pad_batch(batch, 7)
  assert full_mask.all() and full["labels"] is batch["labels"]
  with pytest.raises(ValueError, match="more than batch_size"):
    pad_batch(batch, 5)


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
  data = generate_aliexpress(2500, seed=0)
  tagged = RankingData(
    data.categorical,
    np.concatenate([np.arange(2500, dtype=np.float32)[:, None] / 4096, data.numerical[:, 1:]], 1),
    data.labels,
    data.cardinalities,
    data.task_names,
  )
  path = tmp_path_factory.mktemp("stream") / "train.csv"
  write_aliexpress_csv(tagged, path)
  return path, tagged


def _rows(batches):
  return np.round(np.concatenate([b["numerical"][:, 0] for b in batches]) * 4096).astype(np.int64)


def test_stream_yields_every_row_once_with_bounded_shuffle(csv_file):
  path, data = csv_file
  kwargs = dict(shuffle_buffer=500, chunk_rows=300)
  batches = list(stream_csv_batches(path, 64, data.cardinalities, seed=3, epoch=0, **kwargs))
  assert (
    all(len(b["labels"]) == 64 for b in batches[:-1]) and len(batches[-1]["labels"]) == 2500 % 64
  )
  rows = _rows(batches)
  assert sorted(rows.tolist()) == list(range(2500))
  assert not np.array_equal(rows, np.arange(2500))  # shuffled
  # bounded look-ahead: the first batch only sees rows within buffer + batch + one chunk
  assert rows[:64].max() < 500 + 64 + 300 and rows[:64].min() < 300
  for batch in batches:  # row contents stay aligned with their tag
    index = np.round(batch["numerical"][:, 0] * 4096).astype(int)
    np.testing.assert_array_equal(batch["categorical"], data.categorical[index])
    np.testing.assert_array_equal(batch["labels"], data.labels[index])
  again = _rows(stream_csv_batches(path, 64, data.cardinalities, seed=3, epoch=0, **kwargs))
  next_epoch = _rows(stream_csv_batches(path, 64, data.cardinalities, seed=3, epoch=1, **kwargs))
  np.testing.assert_array_equal(rows, again)
  assert sorted(next_epoch.tolist()) == list(range(2500)) and not np.array_equal(rows, next_epoch)


def test_stream_in_file_order_and_drop_last(csv_file):
  path, data = csv_file
  ordered = list(
    stream_csv_batches(path, 100, data.cardinalities, shuffle_buffer=0, seed=None, chunk_rows=333)
  )
  assert [len(b["labels"]) for b in ordered] == [100] * 25
  assert _rows(ordered).tolist() == list(range(2500))
  dropped = list(
    stream_csv_batches(
      path, 64, data.cardinalities, shuffle_buffer=200, seed=0, chunk_rows=256, drop_last=True
    )
  )
  assert [len(b["labels"]) for b in dropped] == [64] * (2500 // 64)
  assert len(set(_rows(dropped).tolist())) == 64 * (2500 // 64)


def test_stream_checks_ids_against_given_tables(csv_file):
  path, data = csv_file
  small = tuple(max(c - 1, 1) for c in data.categorical.max(0) + 1)
  with pytest.raises(
    ValueError, match=r"train\.csv, line \d+, column \d+ \(categorical_\d+\): id \d+ >= cardinality"
  ):
    list(stream_csv_batches(path, 64, small, shuffle_buffer=100, seed=0, chunk_rows=500))
  with pytest.raises(ValueError, match="seed"):
    list(stream_csv_batches(path, 64, data.cardinalities, shuffle_buffer=100, seed=None))
