"""AliExpress loaders on small files written here in exactly the real formats."""

import os

import numpy as np
import pytest

from pub_optax.ranking.data.aliexpress import (
  COLUMNS,
  aliexpress_csv_cardinalities,
  iter_aliexpress_csv,
  load_aliexpress,
  load_aliexpress_raw,
  read_aliexpress_csv,
)

# ----------------------------------------------------------------------------
# Processed-format files, written independently of the package's writer.


def _rows(rng, n, max_id=50):
  search = np.repeat(np.arange(n // 3 + 1) * 13 + 5, 3)[:n]
  cat = rng.integers(0, max_id, (n, 16))
  num = rng.random((n, 63)).astype(np.float32)
  click = (rng.random(n) < 0.3).astype(int)
  conversion = click * (rng.random(n) < 0.5)
  return search, cat, num, np.stack([click, conversion], 1)


def _line(search, cat, num, labels):
  values = [str(int(search))] + [str(int(c)) for c in cat] + [repr(float(x)) for x in num]
  return ",".join(values + [str(int(v)) for v in labels]) + "\n"


def _write(path, search, cat, num, labels, header=",".join(COLUMNS)):
  with open(path, "w") as f:
    f.write(header + "\n")
    for row in zip(search, cat, num, labels):
      f.write(_line(*row))


@pytest.fixture
def processed(tmp_path):
  rng = np.random.default_rng(0)
  train = _rows(rng, 40)
  test = _rows(rng, 25)
  test[1][3, 5] = 77  # a test id beyond every train id of field 5
  _write(tmp_path / "train.csv", *train)
  _write(tmp_path / "test.csv", *test)
  return tmp_path, train, test


def _lines(path):
  return open(path).read().splitlines(keepends=True)


def _rewrite(path, lines):
  with open(path, "w") as f:
    f.writelines(lines)


def test_load_round_trips_values_and_shares_cardinalities(processed):
  directory, train, test = processed
  data = load_aliexpress(directory, chunk_rows=7)  # many chunk boundaries
  for split, (_, cat, num, labels) in (("train", train), ("test", test)):
    d = data[split]
    assert d.categorical.dtype == np.int32 and d.numerical.dtype == np.float32
    assert d.labels.dtype == np.float32 and d.task_names == ("ctr", "ctcvr")
    np.testing.assert_array_equal(d.categorical, cat)
    np.testing.assert_array_equal(d.numerical, num)  # float32 exact
    np.testing.assert_array_equal(d.labels, labels)
  expected = np.maximum(train[1].max(0), test[1].max(0)) + 1
  assert data["train"].cardinalities == tuple(expected) == data["test"].cardinalities
  assert data["train"].cardinalities[5] == 78
  same = load_aliexpress({"train": directory / "train.csv", "test": directory / "test.csv"})
  np.testing.assert_array_equal(same["test"].numerical, data["test"].numerical)


def test_read_single_file_and_chunk_size_independent(processed):
  directory, train, _ = processed
  a = read_aliexpress_csv(directory / "train.csv", chunk_rows=1)
  b = read_aliexpress_csv(directory / "train.csv", chunk_rows=1000)
  np.testing.assert_array_equal(a.categorical, b.categorical)
  assert a.cardinalities == tuple(train[1].max(0) + 1)


def test_missing_files_raise_file_not_found_naming_path(tmp_path, processed):
  directory, *_ = processed
  os.remove(directory / "test.csv")
  with pytest.raises(FileNotFoundError, match="test.csv"):
    load_aliexpress(directory)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_aliexpress(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="absent.csv"):
    read_aliexpress_csv(tmp_path / "absent.csv")


@pytest.mark.parametrize(
  "edit, message",
  [
    # (line index in file (0 = header), column index, new text) -> expected message
    ((4, 20, "abc"), r"train\.csv, line 5, column 21 \(numerical_4\): cannot parse 'abc'"),
    ((2, 3, "1.5"), r"line 3, column 4 \(categorical_3\): 1\.5 is not a non-negative integer id"),
    ((6, 1, "-4"), r"line 7, column 2 \(categorical_1\): -4\.0 is not a non-negative integer id"),
    ((3, 40, "nan"), r"line 4, column 41 \(numerical_24\): non-finite value nan"),
    ((0, 5, "cat_5"), r"line 1, column 6: header has 'cat_5', expected 'categorical_5'"),
    ((4, 30, "1_000"), r"line 5: could not convert string '1_000' to float64 at row 0, column 31"),
  ],
)
def test_malformed_value_names_file_line_and_column(processed, edit, message):
  directory, *_ = processed
  path = directory / "train.csv"
  lines = _lines(path)
  index, column, text = edit
  parts = lines[index].rstrip("\n").split(",")
  parts[column] = text
  lines[index] = ",".join(parts) + "\n"
  _rewrite(path, lines)
  with pytest.raises(ValueError, match=message):
    read_aliexpress_csv(path, chunk_rows=4)


def test_wrong_column_count_names_line_and_column(processed):
  directory, *_ = processed
  path = directory / "train.csv"
  lines = _lines(path)
  lines[9] = lines[9].rstrip("\n").rsplit(",", 1)[0] + "\n"  # drop 'conversion'
  _rewrite(path, lines)
  with pytest.raises(ValueError, match=r"line 10, column 82 \(conversion\): missing"):
    read_aliexpress_csv(path, chunk_rows=3)
  lines[9] = lines[9].rstrip("\n") + ",0,7\n"
  _rewrite(path, lines)
  with pytest.raises(ValueError, match=r"line 10, column 83: unexpected extra column"):
    read_aliexpress_csv(path)


def test_blank_lines_only_allowed_at_the_end(processed):
  directory, train, _ = processed
  path = directory / "train.csv"
  lines = _lines(path)
  _rewrite(path, lines + ["\n", "\n"])
  assert len(read_aliexpress_csv(path, chunk_rows=5)) == 40
  _rewrite(path, lines[:8] + ["\n"] + lines[8:])
  with pytest.raises(ValueError, match="line 9: blank line inside the data"):
    read_aliexpress_csv(path, chunk_rows=5)


def test_bad_labels_raise_or_drop_with_count(processed):
  directory, train, _ = processed
  path = directory / "train.csv"
  lines = _lines(path)
  for index, labels in ((3, "2,0"), (11, "0,1"), (12, "1,-1")):
    lines[index] = lines[index].rstrip("\n").rsplit(",", 2)[0] + "," + labels + "\n"
  _rewrite(path, lines)
  with pytest.raises(ValueError, match=r"3 rows with bad labels.*first at line 4"):
    read_aliexpress_csv(path)
  with pytest.warns(UserWarning, match="dropped 3 rows with bad labels"):
    data = read_aliexpress_csv(path, on_bad_labels="drop", chunk_rows=5)
  keep = np.ones(40, bool)
  keep[[2, 10, 11]] = False
  np.testing.assert_array_equal(data.categorical, train[1][keep])
  np.testing.assert_array_equal(data.labels, train[3][keep])
  with pytest.raises(ValueError, match="on_bad_labels"):
    read_aliexpress_csv(path, on_bad_labels="ignore")


def test_given_cardinalities_catch_ids_beyond_table_with_line(processed):
  directory, train, _ = processed
  cards = list(train[1].max(0) + 1)
  cards[2] -= 1
  offending = np.flatnonzero(train[1][:, 2] == cards[2])
  with pytest.raises(
    ValueError,
    match=rf"line {offending[0] + 2}, column 4 \(categorical_3\): id {cards[2]} >= cardinality {cards[2]}",
  ):
    read_aliexpress_csv(directory / "train.csv", cardinalities=cards)


def test_streaming_chunks_equal_full_read_and_scan_gives_cardinalities(processed):
  directory, train, test = processed
  full = load_aliexpress(directory)
  cards = aliexpress_csv_cardinalities(
    directory / "train.csv", directory / "test.csv", chunk_rows=6
  )
  assert cards == full["train"].cardinalities
  chunks = list(iter_aliexpress_csv(directory / "test.csv", 6, cardinalities=cards))
  assert [len(c) for c in chunks] == [6, 6, 6, 6, 1]
  np.testing.assert_array_equal(
    np.concatenate([c.numerical for c in chunks]), full["test"].numerical
  )
  assert all(c.cardinalities == cards for c in chunks)
  with pytest.raises(ValueError, match=r"categorical_6\): id 77 >= cardinality 50"):
    list(iter_aliexpress_csv(directory / "test.csv", 6, cardinalities=(50,) * 16))


def test_header_only_file_gives_empty_split(tmp_path):
  with open(tmp_path / "train.csv", "w") as f:
    f.write(",".join(COLUMNS) + "\n")
  data = read_aliexpress_csv(tmp_path / "train.csv")
  assert len(data) == 0 and data.categorical.shape == (0, 16)


# ----------------------------------------------------------------------------
# Raw per-country release.

USER_CAT = [2, 3, 4, 5, 6, 7, 8, 32, 33]
ITEM_CAT = [19, 34, 35, 36, 40, 41, 42]
ITEM_NUM = [c for c in range(2, 49) if c not in ITEM_CAT]


def _raw_world(rng, n_pages, first_search):
  """Per-page user features and per-impression item features with dense ids."""
  pages = first_search + 1000 * np.arange(n_pages) + rng.integers(0, 999, n_pages)
  user_cat = rng.integers(0, 6, (n_pages, 9))
  user_num = rng.random((n_pages, 23)).astype(np.float32)
  per_page = rng.integers(1, 4, n_pages)
  page_of_row = np.repeat(np.arange(n_pages), per_page)
  n = len(page_of_row)
  item_cat = rng.integers(0, 9, (n, 7))
  item_num = rng.random((n, 40)).astype(np.float32)
  raw_label = rng.choice([0, 1, 2], n, p=[0.6, 0.25, 0.15])
  return dict(
    pages=pages,
    user_cat=user_cat,
    user_num=user_num,
    page_of_row=page_of_row,
    item_cat=item_cat,
    item_num=item_num,
    raw_label=raw_label,
  )


def _densify(worlds):
  """Makes every field's ids 0..K-1 over all rows of all splits (test-side data construction)."""
  for field in range(16):
    columns = []
    for w in worlds:
      columns.append(
        w["user_cat"][w["page_of_row"], field] if field < 9 else w["item_cat"][:, field - 9]
      )
    values = np.unique(np.concatenate(columns))
    for w in worlds:
      if field < 9:
        # user ids live per page; pages without impressions do not exist here
        w["user_cat"][:, field] = np.searchsorted(values, w["user_cat"][:, field])
      else:
        w["item_cat"][:, field - 9] = np.searchsorted(values, w["item_cat"][:, field - 9])


def _to_raw(ids):
  return 3_000_000_019 + 7919 * ids  # strictly increasing, sparse, beyond int32


def _write_raw(directory, country, split, w, *, sparse_ids, extra_user=False, rng=None, suffix=""):
  raw = _to_raw if sparse_ids else (lambda x: x)
  user_rows = []
  for page in range(len(w["pages"])):
    row = [0.0] * 33
    row[0] = w["pages"][page]
    for k, c in enumerate(USER_CAT):
      row[c - 1] = raw(w["user_cat"][page, k])
    for k, c in enumerate(range(9, 32)):
      row[c - 1] = float(w["user_num"][page, k])
    user_rows.append(row)
  if extra_user:  # a user without impressions: its ids must not occupy table slots
    user_rows.append([9e12] + [raw(10_000)] * 32)
  order = (rng or np.random.default_rng(0)).permutation(len(user_rows))
  with open(directory / f"{country}_user_{split}{suffix}", "w") as f:
    for i in order:
      f.write(
        ",".join(repr(v) if isinstance(v, float) else str(int(v)) for v in user_rows[i]) + "\n"
      )
  with open(directory / f"{country}_item_{split}{suffix}", "w") as f:
    for r, page in enumerate(w["page_of_row"]):
      row = [0.0] * 49
      row[0] = w["pages"][page]
      for k, c in enumerate(ITEM_CAT):
        row[c - 1] = raw(w["item_cat"][r, k])
      for k, c in enumerate(ITEM_NUM):
        row[c - 1] = float(w["item_num"][r, k])
      row[48] = w["raw_label"][r]
      f.write(",".join(repr(v) if isinstance(v, float) else str(int(v)) for v in row) + "\n")


def _write_processed_from_world(path, w):
  p = w["page_of_row"]
  cat = np.concatenate([w["user_cat"][p], w["item_cat"]], 1)
  num = np.concatenate([w["user_num"][p], w["item_num"]], 1)
  labels = np.stack([w["raw_label"] >= 1, w["raw_label"] == 2], 1).astype(int)
  _write(path, w["pages"][p], cat, num, labels)


@pytest.fixture
def raw_worlds(tmp_path):
  rng = np.random.default_rng(11)
  worlds = {"train": _raw_world(rng, 30, 10**9), "test": _raw_world(rng, 15, 5 * 10**9)}
  _densify(list(worlds.values()))
  processed = tmp_path / "processed"
  processed.mkdir()
  for split, w in worlds.items():
    _write_processed_from_world(processed / f"{split}.csv", w)
  return tmp_path, worlds, load_aliexpress(processed)


def test_raw_equals_processed_with_sparse_ids_reindexed(raw_worlds):
  directory, worlds, expected = raw_worlds
  for split, w in worlds.items():
    _write_raw(
      directory, "NL", split, w, sparse_ids=True, extra_user=True, rng=np.random.default_rng(3)
    )
  raw = load_aliexpress_raw(directory, "NL", chunk_rows=8)
  for split in worlds:
    np.testing.assert_array_equal(raw[split].categorical, expected[split].categorical)
    np.testing.assert_array_equal(raw[split].numerical, expected[split].numerical)
    np.testing.assert_array_equal(raw[split].labels, expected[split].labels)
    assert raw[split].cardinalities == expected[split].cardinalities


def test_raw_without_reindex_keeps_ids_and_accepts_csv_suffix(raw_worlds):
  directory, worlds, expected = raw_worlds
  for split, w in worlds.items():
    _write_raw(directory, "ES", split, w, sparse_ids=False, suffix=".csv")
  raw = load_aliexpress_raw(directory, "ES", reindex=False)
  np.testing.assert_array_equal(raw["test"].categorical, expected["test"].categorical)
  assert raw["train"].cardinalities == expected["train"].cardinalities
  for split, w in worlds.items():
    _write_raw(directory, "FR", split, w, sparse_ids=True)
  with pytest.raises(ValueError, match="use reindex=True"):
    load_aliexpress_raw(directory, "FR", reindex=False, splits=("train",))


def test_raw_error_paths(raw_worlds):
  directory, worlds, _ = raw_worlds
  for split, w in worlds.items():
    _write_raw(directory, "US", split, w, sparse_ids=True)
  with pytest.raises(FileNotFoundError, match="XX_user_train"):
    load_aliexpress_raw(directory, "XX")

  item = directory / "US_item_train"
  lines = _lines(item)
  original = list(lines)
  parts = lines[4].rstrip("\n").split(",")
  parts[48] = "3"
  lines[4] = ",".join(parts) + "\n"
  _rewrite(item, lines)
  with pytest.raises(ValueError, match=r"US_item_train: 1 rows with bad labels.*first at line 5"):
    load_aliexpress_raw(directory, "US")
  with pytest.warns(UserWarning, match="dropped 1 rows"):
    data = load_aliexpress_raw(directory, "US", on_bad_labels="drop")
  assert len(data["train"]) == len(worlds["train"]["page_of_row"]) - 1

  parts[48] = "1"
  parts[0] = "77"  # a search id no user row has
  lines[4] = ",".join(parts) + "\n"
  _rewrite(item, lines)
  with pytest.raises(
    ValueError,
    match=r"US_item_train, line 5, column 1 \(item_1\): 1 item rows have a search id absent",
  ):
    load_aliexpress_raw(directory, "US")

  parts[0] = original[4].split(",")[0]
  parts[30] = "x1"
  lines[4] = ",".join(parts) + "\n"
  _rewrite(item, lines)
  with pytest.raises(
    ValueError, match=r"US_item_train, line 5, column 31 \(item_31\): cannot parse 'x1'"
  ):
    load_aliexpress_raw(directory, "US")
  _rewrite(item, original)

  user = directory / "US_user_test"
  lines = _lines(user)
  _rewrite(user, lines + [lines[2]])
  with pytest.raises(
    ValueError,
    match=rf"US_user_test, line {len(lines) + 1}, column 1 \(user_1\): search id .* repeats",
  ):
    load_aliexpress_raw(directory, "US")


# ----------------------------------------------------------------------------
# The container every loader returns.

import dataclasses  # noqa: E402

from pub_optax.ranking.data.types import (  # noqa: E402
  RankingData,
  cardinalities_of,
  concatenate,
  shared_cardinalities,
  with_cardinalities,
)


def _data(n=30, cards=(1000, 20, 5, 1000), seed=0, **override):
  rng = np.random.default_rng(seed)
  fields = dict(
    categorical=np.stack([rng.integers(0, c, n) for c in cards], 1).astype(np.int32),
    numerical=rng.random((n, 2)).astype(np.float32),
    labels=(rng.random((n, 2)) < 0.5).astype(np.float32),
    cardinalities=cards,
    task_names=("ctr", "ctcvr"),
  )
  fields.update(override)
  return RankingData(**fields)


def test_ranking_data_names_field_and_count_of_bad_ids():
  good = _data()
  ids = good.categorical.copy()
  ids[:12, 3] = 1000 + np.arange(12)
  with pytest.raises(ValueError, match=r"^categorical field 3: 12 ids >= cardinality 1000$"):
    _data(categorical=ids)
  ids = good.categorical.copy()
  ids[[1, 4], 1] = -1
  with pytest.raises(ValueError, match="categorical field 1: 2 ids < 0"):
    _data(categorical=ids)


@pytest.mark.parametrize(
  "override, message",
  [
    (
      dict(numerical=np.zeros((29, 2), np.float32)),
      "numerical: has 29 rows but categorical has 30",
    ),
    (dict(labels=np.zeros((30, 2, 1), np.float32)), "labels: expected a 2-D array"),
    (dict(cardinalities=(1000, 20, 5)), "cardinalities: 3 given for 4 categorical fields"),
    (dict(task_names=("ctr",)), "task_names: 1 given for 2 label columns"),
    (dict(categorical=np.zeros((30, 4), np.float32)), "expected integer ids"),
    (
      dict(labels=np.full((30, 2), 2.0, np.float32)),
      r"labels task 0 \(ctr\): 30 values not in \{0, 1\}",
    ),
    (
      dict(numerical=np.full((30, 2), np.inf, np.float32)),
      "numerical field 0: 30 non-finite values",
    ),
    (dict(cardinalities=(1000, 20, 0, 1000)), "categorical field 2: cardinality 0 < 1"),
  ],
)
def test_ranking_data_validation_messages(override, message):
  with pytest.raises(ValueError, match=message):
    _data(**override)


def test_ranking_data_converts_dtypes_and_takes_rows():
  base = _data()
  data = _data(
    categorical=base.categorical.astype(np.int64),
    labels=base.labels.astype(bool),
    numerical=base.numerical.astype(np.float64),
  )
  assert data.categorical.dtype == np.int32 and data.labels.dtype == np.float32
  assert data.numerical.dtype == np.float32 and isinstance(data.cardinalities, tuple)
  assert len(data) == 30 and (data.n_categorical, data.n_numerical, data.n_tasks) == (4, 2, 2)
  rows = np.array([5, 2, 9])
  taken = data.take(rows)
  np.testing.assert_array_equal(taken.categorical, data.categorical[rows])
  np.testing.assert_array_equal(taken.labels, data.labels[rows])
  assert taken.cardinalities == data.cardinalities and taken.task_names == data.task_names
  assert len(data.take(slice(3, 8))) == 5 and len(data.take(data.labels[:, 0] > 0)) == int(
    data.labels[:, 0].sum()
  )
  assert data.take(4).categorical.shape == (1, 4)
  with pytest.raises(dataclasses.FrozenInstanceError):
    data.labels = data.labels


def test_shared_cardinalities_and_helpers():
  a = _data(cards=(10, 10), seed=1)
  b = _data(cards=(40, 3), seed=2)
  expected = tuple(np.maximum(a.categorical.max(0), b.categorical.max(0)) + 1)
  a2, b2 = shared_cardinalities(a, b)
  assert (
    a2.cardinalities
    == b2.cardinalities
    == expected
    == cardinalities_of(a.categorical, b.categorical)
  )
  np.testing.assert_array_equal(a2.categorical, a.categorical)
  assert with_cardinalities(a, (99, 99)).cardinalities == (99, 99)
  with pytest.raises(ValueError, match="ids >= cardinality"):
    with_cardinalities(b, (1, 1))
  both = concatenate([a, b])
  assert len(both) == 60 and both.cardinalities == (40, 10)
  np.testing.assert_array_equal(both.numerical[30:], b.numerical)
  assert cardinalities_of(np.zeros((0, 2), np.int32)) == (1, 1)
