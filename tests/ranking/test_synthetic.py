"""The synthetic AliExpress generator: statistics, ground truth, conflict knob, streaming, files."""

import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from pub_optax.ranking.data.aliexpress import load_aliexpress, read_aliexpress_csv
from pub_optax.ranking.data.synthetic import (
  BLOCK_ROWS,
  SyntheticConfig,
  generate_aliexpress,
  generate_splits,
  iter_aliexpress_chunks,
  write_aliexpress_csv,
  write_aliexpress_csv_chunks,
)


@pytest.fixture(scope="module")
def default_sample():
  return generate_aliexpress(200_000, seed=0, return_truth=True)


def test_same_seed_same_arrays_other_seed_other_arrays():
  a = generate_aliexpress(3000, seed=5)
  b = generate_aliexpress(3000, seed=5)
  c = generate_aliexpress(3000, seed=6)
  for key in ("categorical", "numerical", "labels"):
    np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
  assert a.cardinalities == b.cardinalities
  assert not np.array_equal(a.categorical, c.categorical)


def test_chunks_equal_one_shot_across_block_boundaries():
  n = 2 * BLOCK_ROWS + 1234
  whole, truth = generate_aliexpress(n, seed=3, return_truth=True, conversion_rate=0.1)
  chunks = list(iter_aliexpress_chunks(n, 7777, seed=3, return_truth=True, conversion_rate=0.1))
  assert [len(d) for d, _ in chunks] == [7777] * (n // 7777) + [n % 7777]
  for key in ("categorical", "numerical", "labels"):
    np.testing.assert_array_equal(
      np.concatenate([getattr(d, key) for d, _ in chunks]), getattr(whole, key)
    )
  np.testing.assert_array_equal(
    np.concatenate([t.probabilities for _, t in chunks]), truth.probabilities
  )
  np.testing.assert_array_equal(np.concatenate([t.search_ids for _, t in chunks]), truth.search_ids)
  assert all(d.cardinalities == whole.cardinalities for d, _ in chunks)


def test_realistic_rates_ranges_and_long_tails(default_sample):
  data, truth = default_sample
  click, ctcvr = data.labels[:, 0], data.labels[:, 1]
  assert 0.02 < click.mean() < 0.03
  assert 0.01 < ctcvr.sum() / click.sum() < 0.03  # about 2 % of clicks convert
  assert np.all(ctcvr <= click)  # conversion only after a click
  assert data.numerical.min() >= 0.0 and data.numerical.max() <= 1.0
  assert 0.1 < (data.numerical == 0).mean() < 0.5  # count-like features are zero-inflated
  cards = np.array(data.cardinalities)
  assert cards.min() == 10 and cards.max() == 100_000 and len(set(cards)) == 16
  biggest = int(np.argmax(cards))
  counts = np.sort(np.bincount(data.categorical[:, biggest], minlength=cards[biggest]))[::-1]
  assert counts[: cards[biggest] // 100].sum() > 0.3 * len(data)  # top 1 % of ids: > 30 % of rows
  assert (counts > 0).sum() < cards[biggest]  # the tail is not fully seen
  np.testing.assert_allclose(truth.probabilities[:, 0].mean(), 0.025, rtol=0.05)


def test_bayes_auc_well_above_half(default_sample):
  data, truth = default_sample
  assert roc_auc_score(data.labels[:, 0], truth.probabilities[:, 0]) > 0.7
  assert roc_auc_score(data.labels[:, 1], truth.probabilities[:, 1]) > 0.75
  np.testing.assert_allclose(truth.probabilities[:, 0], 1 / (1 + np.exp(-truth.click_logit)))
  p_conv = 1 / (1 + np.exp(-truth.conversion_logit))
  np.testing.assert_allclose(truth.probabilities[:, 1], truth.probabilities[:, 0] * p_conv)


def test_search_pages_share_user_features(default_sample):
  data, truth = default_sample
  ids = truth.search_ids
  starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
  assert len(np.unique(ids)) == len(starts)  # pages are contiguous
  assert 6 < len(ids) / len(starts) < 14  # mean page size about 10
  first = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
  np.testing.assert_array_equal(data.categorical[:, :9], data.categorical[first, :9])
  np.testing.assert_array_equal(data.numerical[:, :23], data.numerical[first, :23])
  assert (data.categorical[:, 9:] != data.categorical[first, 9:]).any(axis=1).mean() > 0.5


@pytest.mark.parametrize("conflict", [0.0, 0.25, 0.5, 1.0])
def test_conflict_sets_task_score_correlation_and_only_changes_conversions(
  default_sample, conflict
):
  base, _ = default_sample
  data, truth = generate_aliexpress(60_000, seed=0, conflict=conflict, return_truth=True)
  rho = np.corrcoef(truth.click_logit, truth.conversion_logit)[0, 1]
  assert rho == pytest.approx(1 - 2 * conflict, abs=0.03)
  np.testing.assert_array_equal(data.categorical, base.categorical[:60_000])
  np.testing.assert_array_equal(data.numerical, base.numerical[:60_000])
  np.testing.assert_array_equal(data.labels[:, 0], base.labels[:60_000, 0])
  assert 0.01 < data.labels[:, 1].sum() / data.labels[:, 0].sum() < 0.03


def test_signal_knob_orders_bayes_auc_and_conversion_rate_knob():
  weak, weak_truth = generate_aliexpress(20_000, seed=1, click_signal=0.5, return_truth=True)
  strong, strong_truth = generate_aliexpress(20_000, seed=1, click_signal=2.0, return_truth=True)
  weak_auc = roc_auc_score(weak.labels[:, 0], weak_truth.probabilities[:, 0])
  strong_auc = roc_auc_score(strong.labels[:, 0], strong_truth.probabilities[:, 0])
  assert weak_auc + 0.1 < strong_auc
  many = generate_aliexpress(20_000, seed=1, conversion_rate=0.3)
  assert 0.25 < many.labels[:, 1].sum() / many.labels[:, 0].sum() < 0.35


def test_linear_model_learns_both_tasks_from_30k_rows():
  splits = generate_splits(30_000, 0, 20_000, seed=2, conversion_rate=0.2)
  train, test = splits["train"], splits["test"]
  encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=10).fit(train.categorical)

  def features(d):
    return sp.hstack([encoder.transform(d.categorical), sp.csr_matrix(d.numerical)]).tocsr()

  x_train, x_test = features(train), features(test)
  for task in range(2):
    model = LogisticRegression(C=0.1, max_iter=100).fit(x_train, train.labels[:, task])
    assert roc_auc_score(test.labels[:, task], model.decision_function(x_test)) > 0.6


def test_splits_share_ground_truth_and_tables_but_not_rows():
  splits = generate_splits(5000, 1000, 2000, seed=4, return_truth=True)
  assert {k: len(d) for k, (d, _) in splits.items()} == {"train": 5000, "val": 1000, "test": 2000}
  train, test = splits["train"][0], splits["test"][0]
  assert train.cardinalities == test.cardinalities == splits["val"][0].cardinalities
  assert not np.array_equal(train.categorical[:2000], test.categorical)
  np.testing.assert_array_equal(generate_aliexpress(5000, seed=4).numerical, train.numerical)
  assert not set(splits["train"][1].search_ids) & set(splits["test"][1].search_ids)


def test_other_shapes_and_explicit_cardinalities():
  data = generate_aliexpress(
    2000, seed=0, n_categorical=5, n_numerical=7, cardinalities=(3, 4, 5, 6, 7)
  )
  assert data.categorical.shape == (2000, 5) and data.numerical.shape == (2000, 7)
  assert data.cardinalities == (3, 4, 5, 6, 7)
  assert np.all(data.categorical.max(0) < np.array(data.cardinalities))
  assert len(generate_aliexpress(0, seed=0)) == 0


@pytest.mark.parametrize(
  "knobs, message",
  [
    (dict(conflict=1.5), "conflict"),
    (dict(click_rate=0.0), "click_rate"),
    (dict(cardinalities=(5, 5)), "cardinalities"),
    (dict(min_cardinality=10, max_cardinality=5), "min_cardinality"),
  ],
)
def test_config_validation(knobs, message):
  with pytest.raises(ValueError, match=message):
    SyntheticConfig(**knobs)
  with pytest.raises(ValueError, match="seed"):
    generate_aliexpress(10, seed=-1)


def test_csv_round_trip_is_exact_and_keeps_search_ids(tmp_path):
  splits = generate_splits(3000, 0, 1000, seed=0, return_truth=True)
  for name in ("train", "test"):
    data, truth = splits[name]
    write_aliexpress_csv(data, tmp_path / f"{name}.csv", search_ids=truth.search_ids)
  loaded = load_aliexpress(tmp_path)
  for name in ("train", "test"):
    data, truth = splits[name]
    for key in ("categorical", "numerical", "labels"):
      np.testing.assert_array_equal(getattr(loaded[name], key), getattr(data, key))
    written_ids = np.loadtxt(
      tmp_path / f"{name}.csv", delimiter=",", skiprows=1, usecols=0, dtype=np.int64
    )
    np.testing.assert_array_equal(written_ids, truth.search_ids)
  header = open(tmp_path / "train.csv").readline().rstrip("\n").split(",")
  assert len(header) == 82 and header[0] == "search_id" and header[-2:] == ["click", "conversion"]


def test_chunked_writer_equals_one_shot_and_writes_atomically(tmp_path):
  data, truth = generate_aliexpress(2500, seed=9, return_truth=True)
  write_aliexpress_csv(data, tmp_path / "a.csv", search_ids=truth.search_ids)
  chunks = iter_aliexpress_chunks(2500, 600, seed=9, return_truth=True)
  write_aliexpress_csv_chunks(((d, t.search_ids) for d, t in chunks), tmp_path / "b.csv")
  assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()

  before = (tmp_path / "a.csv").read_bytes()
  wrong = generate_aliexpress(10, seed=0, n_categorical=3, n_numerical=2)
  with pytest.raises(ValueError, match="16 categorical, 63 numerical"):
    write_aliexpress_csv(wrong, tmp_path / "a.csv")

  def failing():
    yield data.take(slice(0, 100)), None
    raise RuntimeError("generator failed mid-way")

  with pytest.raises(RuntimeError):
    write_aliexpress_csv_chunks(failing(), tmp_path / "a.csv")
  assert (tmp_path / "a.csv").read_bytes() == before  # old file untouched
  assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]  # no temporary files left
  assert len(read_aliexpress_csv(tmp_path / "a.csv")) == 2500
