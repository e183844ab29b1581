"""Loader for the raw Ali-CCP release (Tianchi 408; the ESMM and AITM data).

Files, headerless, comma separated:

- ``sample_skeleton_{split}.csv``: sample_id, click, purchase,
  common_feature_index, n_features, feature_string;
- ``common_features_{split}.csv``: common_feature_index, n_features,
  feature_string.

A feature string is entries joined by ``\\x01``, each
``field_id \\x02 feature_id \\x03 value``. A sample's features are its own
entries plus those of its common-feature row (user features).

Rules (documented choices):

- One id per sparse field. If a field occurs several times, the first entry
  wins, looking first at the sample's own entries, then at its common row.
- Feature ids are remapped per field to dense ids 1..K, sorted by raw id,
  over every split loaded; id 0 is reserved for "missing" (field absent), so
  the cardinality is K + 1.
- ``numerical`` is ``(N, 0)`` unless ``dense_fields`` are given; a dense
  field's value is the value of its first entry (same precedence), 0.0 when
  absent.
- Labels are ``(click, click and purchase)``, tasks ``("ctr", "ctcvr")``.
  Rows with click = 0 and purchase = 1 are dropped with a warning giving the
  count (``purchase_without_click="drop"``, the usual ESMM preprocessing) or
  raise (``"raise"``). Labels outside {0, 1} follow ``on_bad_labels``.
- ``n_features`` must equal the number of entries of the line.

A missing file raises ``FileNotFoundError``; an unreadable file, a file that is
not UTF-8 text, an empty split and a malformed line (a missing or extra column, a
non-numeric field, a feature id beyond signed 64 bits) raise `DataError` (a
``ValueError``) naming the file, the 1-based line number and the column (and the
entry number inside a feature string). A UTF-8 byte-order mark at the start of
a file is accepted and skipped. Parsing is line by line in Python
(about a few microseconds per row), with memory proportional to the rows kept.
"""

from __future__ import annotations

import math
import os
import warnings
from array import array
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from pub_optax.ranking.data.types import DataError, RankingData

__all__ = ["AITM_SPARSE_FIELDS", "TASK_NAMES", "load_aliccp"]

AITM_SPARSE_FIELDS = (
  "101",
  "121",
  "122",
  "124",
  "125",
  "126",
  "127",
  "128",
  "129",
  "205",
  "206",
  "207",
  "216",
  "508",
  "509",
  "702",
  "853",
  "301",
)
TASK_NAMES = ("ctr", "ctcvr")
_SKELETON_COLUMNS = (
  "sample_id",
  "click",
  "purchase",
  "common_feature_index",
  "n_features",
  "feature_string",
)
_COMMON_COLUMNS = ("common_feature_index", "n_features", "feature_string")
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_MISSING = _INT64_MIN  # marks an absent field; no feature id may take this value


def _path(directory: str, name: str) -> str:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Ali-CCP file not found: {path}")
  return path


def _columns(line: str, names: Sequence[str], path: str, number: int) -> list[str]:
  parts = line.rstrip("\r\n").split(",")
  if len(parts) < len(names):
    raise DataError(
      f"{path}, line {number}, column {len(parts) + 1} ({names[len(parts)]}): missing; "
      f"expected {len(names)} columns, got {len(parts)}"
    )
  if len(parts) > len(names):
    raise DataError(
      f"{path}, line {number}, column {len(names) + 1}: unexpected extra column; "
      f"expected {len(names)} columns, got {len(parts)}"
    )
  return parts


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """Numbered lines of a UTF-8 file (a leading byte-order mark skipped).

  Raises:
    DataError: the file cannot be read, is not UTF-8 text, or has a blank line.
  """
  try:
    handle = open(path, encoding="utf-8-sig")
  except FileNotFoundError:
    raise
  except OSError as err:
    raise DataError(f"{path}: cannot read the file: {err.strerror}") from None
  with handle:
    number = 0
    while True:
      try:
        line = handle.readline()
      except UnicodeDecodeError as err:
        raise DataError(
          f"{path}, line {number + 1}: not UTF-8 text ({err.reason}); a binary or UTF-16 "
          "file? save it as UTF-8"
        ) from None
      if not line:
        return
      number += 1
      if not line.strip():
        raise DataError(f"{path}, line {number}: blank line")
      yield number, line


def _scan(text: str, slots: dict[str, int], declared: str, path: str, number: int, column: int):
  """Returns ``{slot: (feature_id, value)}`` (first entry per slot) of a feature string."""
  entries = text.split("\x01") if text else []
  try:
    count = int(declared)
  except ValueError:
    raise DataError(
      f"{path}, line {number}, column {column - 1} (n_features): {declared!r} is not an integer"
    ) from None
  if count != len(entries):
    raise DataError(
      f"{path}, line {number}, column {column - 1} (n_features): says {count} "
      f"but the feature string has {len(entries)} entries"
    )
  found: dict[int, tuple[int, float]] = {}
  for position, entry in enumerate(entries, 1):
    field, sep_field, rest = entry.partition("\x02")
    feature, sep_value, value = rest.partition("\x03")
    if not (sep_field and sep_value and field and feature):
      raise DataError(
        f"{path}, line {number}, column {column} (feature_string), entry {position}: "
        f"{entry!r} is not 'field\\x02feature\\x03value'"
      )
    slot = slots.get(field)
    if slot is None or slot in found:
      continue
    where = f"{path}, line {number}, column {column} (feature_string), entry {position}"
    try:
      found[slot] = (int(feature), float(value))
    except ValueError:
      raise DataError(
        f"{where}: feature id {feature!r} must be an integer and value {value!r} a number"
      ) from None
    if not _INT64_MIN < found[slot][0] <= _INT64_MAX:
      raise DataError(f"{where}: feature id {feature} does not fit in a signed 64-bit integer")
    if not math.isfinite(found[slot][1]):
      raise DataError(f"{where}: value {value!r} is not finite")
  return found


def _read_common(path: str, slots: dict[str, int], n_slots: int):
  """Returns ``(index -> row, raw ids (R, S) int64, values (R, S) float64)`` of a common file."""
  rows: dict[str, int] = {}
  ids, values = array("q"), array("d")
  for number, line in _lines(path):
    key, declared, text = _columns(line, _COMMON_COLUMNS, path, number)
    if key in rows:
      raise DataError(
        f"{path}, line {number}, column 1 (common_feature_index): {key!r} repeats "
        f"(first at line {rows[key] + 1})"
      )
    found = _scan(text, slots, declared, path, number, 3)
    row_ids, row_values = [_MISSING] * n_slots, [0.0] * n_slots
    for slot, (feature, value) in found.items():
      row_ids[slot], row_values[slot] = feature, value
    rows[key] = len(rows)
    ids.extend(row_ids)
    values.extend(row_values)
  return (
    rows,
    np.frombuffer(ids, np.int64).reshape(-1, n_slots),
    np.frombuffer(values, np.float64).reshape(-1, n_slots),
  )


def _label(text: str, name: str, path: str, number: int, column: int) -> float:
  if text in ("0", "1"):
    return float(text)
  try:
    return float(text)
  except ValueError:
    raise DataError(
      f"{path}, line {number}, column {column} ({name}): {text!r} is not a number"
    ) from None


def _report_dropped(path: str, count: int, first: int, what: str, option: str, choice: str):
  """Raises for ``count`` rows of kind ``what`` when ``choice`` is "raise", else warns they were dropped."""
  if not count:
    return
  if choice == "raise":
    raise DataError(
      f"{path}: {count} {what}, first at line {first}; pass {option}='drop' to drop them"
    )
  warnings.warn(f"{path}: dropped {count} {what}", stacklevel=4)


def _read_split(
  skeleton: str,
  common: str,
  slots: dict[str, int],
  n_slots: int,
  on_bad_labels: str,
  purchase_without_click: str,
):
  common_rows, common_ids, common_values = _read_common(common, slots, n_slots)
  own_ids, own_values = array("q"), array("d")
  common_row, labels = array("q"), array("f")
  bad_labels = bad_purchase = 0
  first_bad = first_purchase = 0
  for number, line in _lines(skeleton):
    _, click_text, purchase_text, key, declared, text = _columns(
      line, _SKELETON_COLUMNS, skeleton, number
    )
    click = _label(click_text, "click", skeleton, number, 2)
    purchase = _label(purchase_text, "purchase", skeleton, number, 3)
    found = _scan(text, slots, declared, skeleton, number, 6)
    row = common_rows.get(key)
    if row is None:
      raise DataError(
        f"{skeleton}, line {number}, column 4 (common_feature_index): {key!r} is not in {common}"
      )
    if click not in (0.0, 1.0) or purchase not in (0.0, 1.0):
      bad_labels += 1
      first_bad = first_bad or number
      continue
    if click == 0.0 and purchase == 1.0:
      bad_purchase += 1
      first_purchase = first_purchase or number
      continue
    row_ids, row_values = [_MISSING] * n_slots, [np.nan] * n_slots
    for slot, (feature, value) in found.items():
      row_ids[slot], row_values[slot] = feature, value
    own_ids.extend(row_ids)
    own_values.extend(row_values)
    common_row.append(row)
    labels.extend((click, click * purchase))
  what = "rows with click or purchase not in {0, 1}"
  _report_dropped(skeleton, bad_labels, first_bad, what, "on_bad_labels", on_bad_labels)
  what = "rows with purchase = 1 and click = 0"
  _report_dropped(
    skeleton, bad_purchase, first_purchase, what, "purchase_without_click", purchase_without_click
  )
  if not len(labels):
    raise DataError(f"{skeleton}: no data rows, so this split is empty")
  own_ids = np.frombuffer(own_ids, np.int64).reshape(-1, n_slots)
  own_values = np.frombuffer(own_values, np.float64).reshape(-1, n_slots)
  rows = np.frombuffer(common_row, np.int64)
  ids = np.where(own_ids != _MISSING, own_ids, common_ids[rows] if len(rows) else own_ids)
  values = np.where(
    own_ids != _MISSING, own_values, common_values[rows] if len(rows) else own_values
  )
  values = np.where(ids == _MISSING, 0.0, values)
  return ids, values, np.frombuffer(labels, np.float32).reshape(-1, 2)


def load_aliccp(
  directory,
  *,
  splits: Sequence[str] = ("train", "test"),
  sparse_fields: Sequence[str] = AITM_SPARSE_FIELDS,
  dense_fields: Sequence[str] = (),
  on_bad_labels: Literal["raise", "drop"] = "raise",
  purchase_without_click: Literal["raise", "drop"] = "drop",
) -> dict[str, RankingData]:
  """Loads raw Ali-CCP splits as `RankingData` with dense per-field ids.

  Args:
    directory: folder with ``sample_skeleton_{split}.csv`` and
      ``common_features_{split}.csv`` for every split.
    splits: split names.
    sparse_fields: field ids (strings, e.g. ``"101"``, ``"109_14"``) that
      become categorical columns, in this order (default: AITM's 18).
    dense_fields: field ids whose entry value becomes a numerical column.
    on_bad_labels: click/purchase outside {0, 1}: ``"raise"`` or ``"drop"``
      (with a warning giving the count).
    purchase_without_click: rows with click 0 and purchase 1: ``"drop"``
      (default, warns with the count) or ``"raise"``.

  Returns:
    ``{split: RankingData}``; cardinality of a field = distinct ids over all
    splits + 1 (id 0 = missing).

  Example:
    >>> import tempfile, os
    >>> directory = tempfile.mkdtemp()
    >>> for split in ("train", "test"):
    ...     with open(os.path.join(directory, f"common_features_{split}.csv"), "w") as f:
    ...         _ = f.write("u1,1,101\\x0255\\x031.0\\n")
    ...     with open(os.path.join(directory, f"sample_skeleton_{split}.csv"), "w") as f:
    ...         _ = f.write("1,1,1,u1,1,205\\x029\\x031.0\\n2,0,0,u1,0,\\n")
    >>> data = load_aliccp(directory, sparse_fields=("101", "205"))
    >>> data["train"].categorical.tolist(), data["train"].labels.tolist()
    ([[1, 1], [1, 0]], [[1.0, 1.0], [0.0, 0.0]])
  """
  for name, value in (
    ("on_bad_labels", on_bad_labels),
    ("purchase_without_click", purchase_without_click),
  ):
    if value not in ("raise", "drop"):
      raise DataError(f"{name} must be 'raise' or 'drop', got {value!r}")
  sparse_fields, dense_fields = tuple(map(str, sparse_fields)), tuple(map(str, dense_fields))
  all_fields = sparse_fields + dense_fields
  if len(set(all_fields)) != len(all_fields):
    raise DataError(f"a field is listed twice in sparse_fields + dense_fields: {all_fields}")
  slots = {field: slot for slot, field in enumerate(all_fields)}
  directory = os.fspath(directory)
  paths = {
    split: (
      _path(directory, f"sample_skeleton_{split}.csv"),
      _path(directory, f"common_features_{split}.csv"),
    )
    for split in splits
  }
  parsed = {
    split: _read_split(skeleton, common, slots, len(slots), on_bad_labels, purchase_without_click)
    for split, (skeleton, common) in paths.items()
  }
  n_sparse = len(sparse_fields)
  cardinalities = []
  dense_ids = {split: np.zeros((len(p[0]), n_sparse), np.int32) for split, p in parsed.items()}
  for slot in range(n_sparse):
    raw = (
      np.concatenate([p[0][:, slot] for p in parsed.values()]) if parsed else np.zeros(0, np.int64)
    )
    vocabulary = np.unique(raw[raw != _MISSING])
    if len(vocabulary) + 1 > np.iinfo(np.int32).max:
      raise DataError(f"field {sparse_fields[slot]}: too many distinct ids for int32")
    cardinalities.append(len(vocabulary) + 1)
    for split, (ids, _, _) in parsed.items():
      column = ids[:, slot]
      present = column != _MISSING
      dense_ids[split][present, slot] = np.searchsorted(vocabulary, column[present]) + 1
  return {
    split: RankingData(
      categorical=dense_ids[split],
      numerical=values[:, n_sparse:].astype(np.float32),
      labels=labels,
      cardinalities=tuple(cardinalities),
      task_names=TASK_NAMES,
    )
    for split, (_, values, labels) in parsed.items()
  }
