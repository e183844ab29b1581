"""Ali-CCP loader on small files written here in exactly the raw format."""

import numpy as np
import pytest

from pub_optax.ranking.data.aliccp import AITM_SPARSE_FIELDS, load_aliccp

USER_FIELDS = ["101", "121", "122", "124", "125", "126", "127", "128", "129"]
ITEM_FIELDS = ["205", "206", "207", "216", "508", "509", "702", "853", "301"]
assert sorted(USER_FIELDS + ITEM_FIELDS) == sorted(AITM_SPARSE_FIELDS)
FIELD_INDEX = {f: AITM_SPARSE_FIELDS.index(f) for f in AITM_SPARSE_FIELDS}


def _entry(field, feature, value=1.0):
  return f"{field}\x02{feature}\x03{value}"


def _raw(field, dense):
  """Raw feature id of a dense id: increasing per field, large and sparse, shared space."""
  return 10**9 + 1000 * int(field.split("_")[0]) + 7 * 10**6 * int(dense)


def _split_world(rng, n_common, n_samples, tag):
  users = {f"{tag}{k:08x}": rng.integers(0, 4, len(USER_FIELDS)) for k in range(n_common)}
  keys = list(users)
  samples = []
  for s in range(n_samples):
    samples.append(
      dict(
        key=keys[rng.integers(0, n_common)],
        own=rng.integers(0, 5, len(ITEM_FIELDS)),  # 0 = field absent
        click=int(rng.random() < 0.5),
        dense=float(np.round(rng.random(), 3)) if rng.random() < 0.7 else None,
      )
    )
    samples[-1]["purchase"] = samples[-1]["click"] * int(rng.random() < 0.5)
  return users, samples


def _write_split(directory, split, users, samples, rng, extra_lines=()):
  with open(directory / f"common_features_{split}.csv", "w") as f:
    for key, ids in users.items():
      entries = [_entry(field, _raw(field, d)) for field, d in zip(USER_FIELDS, ids) if d]
      entries.append(_entry("150_14", 424242, 0.5))  # unselected field
      rng.shuffle(entries)
      f.write(f"{key},{len(entries)},{chr(1).join(entries)}\n")
    f.write(f"unused,{2},{_entry('101', 123456789)}\x01{_entry('205', 987654321)}\n")
  with open(directory / f"sample_skeleton_{split}.csv", "w") as f:
    for number, s in enumerate(samples):
      entries = [_entry(field, _raw(field, d)) for field, d in zip(ITEM_FIELDS, s["own"]) if d]
      entries.append(_entry("999", 77))
      rng.shuffle(entries)
      if s["dense"] is not None:
        entries.insert(0, _entry("150_14", 5, s["dense"]))
        entries.append(_entry("150_14", 6, 99.0))  # later duplicate: ignored
      if s.get("override") is not None:  # the sample's own user field wins over its common row
        entries.insert(0, _entry("101", _raw("101", s["override"])))
      if s.get("duplicate"):  # a second entry of a selected field: ignored
        entries.append(_entry("205", 555555555))
      f.write(
        f"{number},{s['click']},{s['purchase']},{s['key']},{len(entries)},{chr(1).join(entries)}\n"
      )
    for line in extra_lines:
      f.write(line)


def _expected(users, samples):
  rows = []
  for s in samples:
    if s["click"] == 0 and s["purchase"] == 1:
      continue
    user = users[s["key"]].copy()
    if s.get("override") is not None:
      user[0] = s["override"]
    row = np.zeros(18, np.int64)
    for field, d in zip(USER_FIELDS, user):
      row[FIELD_INDEX[field]] = d
    for field, d in zip(ITEM_FIELDS, s["own"]):
      row[FIELD_INDEX[field]] = d
    dense = s["dense"] if s["dense"] is not None else 0.5  # else the common row's value
    rows.append((row, [s["click"], s["click"] * s["purchase"]], dense))
  return (
    np.array([r for r, _, _ in rows]),
    np.array([l for _, l, _ in rows], np.float32),
    np.array([[v] for _, _, v in rows], np.float32),
  )


@pytest.fixture
def world(tmp_path):
  rng = np.random.default_rng(7)
  worlds = {"train": _split_world(rng, 6, 40, "a"), "test": _split_world(rng, 4, 25, "b")}
  users, samples = worlds["train"]
  samples[0].update(override=4)  # value 4 is used nowhere else for field 101
  samples[1].update(duplicate=True)
  samples[2].update(click=0, purchase=1)
  samples[3].update(click=0, purchase=1)
  for split, (users, samples) in worlds.items():
    _write_split(tmp_path, split, users, samples, rng)
  return tmp_path, worlds


def test_load_matches_independent_construction(world):
  directory, worlds = world
  with pytest.warns(UserWarning, match="dropped 2 rows with purchase = 1 and click = 0"):
    data = load_aliccp(directory, dense_fields=("150_14",))
  expected = {split: _expected(*w) for split, w in worlds.items()}
  stacked = np.concatenate([e[0] for e in expected.values()])
  for split, (ids, labels, dense) in expected.items():
    d = data[split]
    # dense ids: rank among the raw ids seen in that field over both splits; 0 = missing
    want = np.zeros_like(ids)
    for field in range(18):
      used = np.unique(stacked[:, field][stacked[:, field] > 0])
      present = ids[:, field] > 0
      want[present, field] = np.searchsorted(used, ids[present, field]) + 1
    np.testing.assert_array_equal(d.categorical, want)
    np.testing.assert_array_equal(d.labels, labels)
    np.testing.assert_allclose(d.numerical, dense)
    assert d.task_names == ("ctr", "ctcvr") and d.categorical.dtype == np.int32
  cards = tuple(len(np.unique(stacked[:, f][stacked[:, f] > 0])) + 1 for f in range(18))
  assert data["train"].cardinalities == cards == data["test"].cardinalities
  assert (
    data["train"].categorical[0, FIELD_INDEX["101"]] == cards[FIELD_INDEX["101"]] - 1
  )  # override = largest


def test_default_numerical_is_zero_width_and_purchase_rule_can_raise(world):
  directory, _ = world
  with pytest.warns(UserWarning):
    data = load_aliccp(directory)
  assert data["train"].numerical.shape == (len(data["train"]), 0)
  assert data["train"].numerical.dtype == np.float32
  with pytest.raises(ValueError, match=r"2 rows with purchase = 1 and click = 0, first at line 3"):
    load_aliccp(directory, purchase_without_click="raise")


def _small(directory, skeleton, common="u1,1,101\x0211\x031.0\n"):
  for split in ("train", "test"):
    (directory / f"common_features_{split}.csv").write_text(common)
    (directory / f"sample_skeleton_{split}.csv").write_text("1,0,0,u1,0,\n")
  (directory / "sample_skeleton_train.csv").write_text(skeleton)


GOOD = "1,1,0,u1,1,205\x0233\x031.0\n"


@pytest.mark.parametrize(
  "line, message",
  [
    (
      "2,1,0,u1,2,205\x0233\x031.0\n",
      r"line 2, column 5 \(n_features\): says 2 but the feature string has 1",
    ),
    ("2,1,0,u1,1,205\x0233\n", r"line 2, column 6 \(feature_string\), entry 1: .* is not 'field"),
    (
      "2,1,0,u1,1,205\x02x7\x031.0\n",
      r"line 2, column 6 \(feature_string\), entry 1: feature id 'x7'",
    ),
    ("2,1,0,u9,1,205\x0233\x031.0\n", r"line 2, column 4 \(common_feature_index\): 'u9' is not in"),
    ("2,1,0,u1\n", r"line 2, column 5 \(n_features\): missing"),
    ("2,yes,0,u1,1,205\x0233\x031.0\n", r"line 2, column 2 \(click\): 'yes' is not a number"),
    ("2,1,0,u1,z,205\x0233\x031.0\n", r"line 2, column 5 \(n_features\): 'z' is not an integer"),
  ],
)
def test_malformed_lines_name_file_line_and_column(tmp_path, line, message):
  _small(tmp_path, GOOD + line)
  with pytest.raises(ValueError, match=r"sample_skeleton_train\.csv, " + message):
    load_aliccp(tmp_path)


def test_malformed_common_file_and_missing_files(tmp_path):
  _small(tmp_path, GOOD, common="u1,1,101\x0211\x031.0\nu1,0,\n")
  with pytest.raises(
    ValueError, match=r"common_features_train\.csv, line 2, column 1 .*'u1' repeats"
  ):
    load_aliccp(tmp_path)
  _small(tmp_path, GOOD)
  (tmp_path / "common_features_test.csv").unlink()
  with pytest.raises(FileNotFoundError, match="common_features_test.csv"):
    load_aliccp(tmp_path)
  with pytest.raises(FileNotFoundError, match="sample_skeleton_train.csv"):
    load_aliccp(tmp_path / "missing")


def test_bad_labels_raise_or_drop_with_count(tmp_path):
  _small(tmp_path, GOOD + "2,2,0,u1,0,\n" + GOOD + "3,1,0.5,u1,0,\n")
  with pytest.raises(
    ValueError, match=r"2 rows with click or purchase not in \{0, 1\}, first at line 2"
  ):
    load_aliccp(tmp_path)
  with pytest.warns(UserWarning, match="dropped 2 rows with click or purchase"):
    data = load_aliccp(tmp_path, on_bad_labels="drop", sparse_fields=("205", "101"))
  assert data["train"].categorical.tolist() == [[1, 1], [1, 1]]
  assert data["test"].categorical.tolist() == [[0, 1]]  # 205 missing -> id 0
  assert data["train"].cardinalities == (2, 2)
  with pytest.warns(UserWarning):
    dense = load_aliccp(
      tmp_path, on_bad_labels="drop", sparse_fields=(), dense_fields=("150_14", "101")
    )
  assert dense["train"].numerical.tolist() == [[0.0, 1.0], [0.0, 1.0]]  # absent everywhere -> 0.0
  assert dense["train"].categorical.shape == (2, 0)
  with pytest.raises(ValueError, match="listed twice"):
    load_aliccp(tmp_path, sparse_fields=("205",), dense_fields=("205",))
