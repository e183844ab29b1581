"""Loaders for the AliExpress data (Tianchi 74690): processed CSV and raw release.

Processed files (as used by MTReclib and the PUB paper's Table II) are
``{train,test}.csv`` with a header and 82 columns: ``search_id``,
``categorical_1..16``, ``numerical_1..63``, ``click``, ``conversion``. The raw
release is, per country, headerless ``{cc}_user_{split}`` (33 columns) and
``{cc}_item_{split}`` (49 columns) joined on ``user_1 == item_1``.

Parsing is chunked (``chunk_rows`` lines at a time through ``np.loadtxt``)
into preallocated arrays, so memory stays proportional to the data; a file
larger than memory can be streamed with `iter_aliexpress_csv`. Labels are
``(click, conversion)``; ``conversion`` is click-and-purchase, so the second
task is CTCVR over all impressions.

Errors: a missing file raises ``FileNotFoundError`` naming the path; an
unreadable file (permissions), a file that is not UTF-8 text (binary, UTF-16),
an empty file and a malformed line raise `DataError` (a ``ValueError``) naming
the file, the 1-based line number (the header is line 1) and the column. A
UTF-8 byte-order mark at the start of a file is accepted and skipped. A
header-only file reads as zero rows; `load_aliexpress` and
`load_aliexpress_raw` refuse an empty split. Bad labels (outside {0, 1}, or a
conversion without a click; for raw files outside {0, 1, 2}) follow
``on_bad_labels``: ``"raise"`` (default) raises ``ValueError`` with their count
and first line, ``"drop"`` removes those rows and warns with the count. Blank
lines are accepted only at the end of a file.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np

from pub_optax.ranking.data.types import DataError, RankingData, cardinalities_of

__all__ = [
  "CATEGORICAL_COLUMNS",
  "COLUMNS",
  "NUMERICAL_COLUMNS",
  "RAW_ITEM_CATEGORICAL",
  "RAW_ITEM_NUMERICAL",
  "RAW_USER_CATEGORICAL",
  "RAW_USER_NUMERICAL",
  "TASK_NAMES",
  "aliexpress_csv_cardinalities",
  "iter_aliexpress_csv",
  "load_aliexpress",
  "load_aliexpress_raw",
  "read_aliexpress_csv",
]

OnBadLabels = Literal["raise", "drop"]

CATEGORICAL_COLUMNS = tuple(f"categorical_{i}" for i in range(1, 17))
NUMERICAL_COLUMNS = tuple(f"numerical_{i}" for i in range(1, 64))
COLUMNS = ("search_id", *CATEGORICAL_COLUMNS, *NUMERICAL_COLUMNS, "click", "conversion")
TASK_NAMES = ("ctr", "ctcvr")

# Raw release: 1-based column numbers, in the order they become
# categorical_1..16 and numerical_1..63 of the processed form.
RAW_USER_CATEGORICAL = (2, 3, 4, 5, 6, 7, 8, 32, 33)
RAW_ITEM_CATEGORICAL = (19, 34, 35, 36, 40, 41, 42)
RAW_USER_NUMERICAL = tuple(range(9, 32))
RAW_ITEM_NUMERICAL = tuple(c for c in range(2, 49) if c not in RAW_ITEM_CATEGORICAL)
_USER_COLUMNS = tuple(f"user_{i}" for i in range(1, 34))
_ITEM_COLUMNS = tuple(f"item_{i}" for i in range(1, 50))

_CAT_POSITIONS = tuple(range(1, 17))
_NUM_POSITIONS = tuple(range(17, 80))
_INT32_MAX = np.iinfo(np.int32).max
_EXACT_FLOAT_INT = 2.0**53
DEFAULT_CHUNK_ROWS = 65536


# --------------------------------------------------------------------------
# Chunked numeric CSV parsing with precise error locations.


def _check_file(path) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"AliExpress file not found: {path}")
  return path


def _open(path: str, mode: str = "r"):
  """Opens ``path`` (text: UTF-8, a leading byte-order mark skipped); unreadable: `DataError`."""
  try:
    if "b" in mode:
      return open(path, mode)
    return open(path, mode, encoding="utf-8-sig")
  except FileNotFoundError:
    raise
  except OSError as err:
    raise DataError(f"{path}: cannot read the file: {err.strerror}") from None


def _not_text(path: str, line_number: int, err: UnicodeDecodeError) -> DataError:
  return DataError(
    f"{path}, line {line_number}: not UTF-8 text (byte {err.object[err.start : err.start + 1]!r}: "
    f"{err.reason}); a binary or UTF-16 file? save it as a UTF-8 CSV"
  )


def _count_data_lines(path: str, header: bool) -> int:
  """Upper bound on the number of data rows (lines, minus the header)."""
  lines, last = 0, b"\n"
  with _open(path, "rb") as handle:
    while block := handle.read(1 << 24):
      lines += block.count(b"\n")
      last = block[-1:]
  if last != b"\n":
    lines += 1
  return max(lines - int(header), 0)


def _diagnose(path: str, lines: Sequence[str], first_line: int, columns: Sequence[str]):
  """Finds the first malformed line of a chunk; returns blank-line numbers if only those."""
  blanks = []
  for offset, line in enumerate(lines):
    number = first_line + offset
    text = line.rstrip("\r\n")
    if not text.strip():
      blanks.append(number)
      continue
    if blanks:
      raise DataError(f"{path}, line {blanks[0]}: blank line inside the data")
    parts = text.split(",")
    if len(parts) < len(columns):
      missing = len(parts) + 1
      raise DataError(
        f"{path}, line {number}, column {missing} ({columns[missing - 1]}): "
        f"missing; expected {len(columns)} columns, got {len(parts)}"
      )
    if len(parts) > len(columns):
      raise DataError(
        f"{path}, line {number}, column {len(columns) + 1}: unexpected extra "
        f"column; expected {len(columns)} columns, got {len(parts)}"
      )
    for index, part in enumerate(parts):
      try:
        float(part)
      except ValueError:
        raise DataError(
          f"{path}, line {number}, column {index + 1} ({columns[index]}): "
          f"cannot parse {part!r} as a number"
        ) from None
    try:  # Python accepted it; ask numpy's parser about this line alone
      _loadtxt([line])
    except ValueError as error:
      raise DataError(f"{path}, line {number}: {error}") from None
  return blanks


def _loadtxt(lines: Sequence[str]) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
    return np.loadtxt(lines, delimiter=",", dtype=np.float64, comments=None, ndmin=2)


class _TextLines:
  """Lines of an open text file, counted, with decoding errors naming the file and line."""

  def __init__(self, path: str, handle):
    self.path, self.handle, self.count = path, handle, 0

  def next_line(self) -> str:
    try:
      line = self.handle.readline()
    except UnicodeDecodeError as err:
      raise _not_text(self.path, self.count + 1, err) from None
    self.count += bool(line)
    return line

  def take(self, n: int) -> list[str]:
    chunk = []
    while len(chunk) < n and (line := self.next_line()):
      chunk.append(line)
    return chunk


def _check_header(path: str, first: str, columns: Sequence[str]) -> None:
  if not first:
    raise DataError(
      f"{path}: empty file; expected a header line ({columns[0]},...,{columns[-1]}) and data rows"
    )
  names = [name.strip() for name in first.rstrip("\r\n").split(",")]
  if names != list(columns):
    for index, (got, want) in enumerate(itertools.zip_longest(names, columns)):
      if got != want:
        raise DataError(
          f"{path}, line 1, column {index + 1}: header has {got!r}, "
          f"expected {want!r} (the {len(columns)}-column format)"
        )


def _numeric_chunks(
  path, columns: Sequence[str], *, header: bool, chunk_rows: int
) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(first_line_number, float64 (n, len(columns)))`` chunks of a CSV."""
  path = _check_file(path)
  if chunk_rows < 1:
    raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
  with _open(path) as handle:
    lines = _TextLines(path, handle)
    if header:
      _check_header(path, lines.next_line(), columns)
    blank_at = None
    while chunk := lines.take(chunk_rows):
      first_line = lines.count - len(chunk) + 1
      if blank_at is not None:
        if any(line.strip() for line in chunk):
          raise DataError(f"{path}, line {blank_at}: blank line inside the data")
        continue
      try:
        values = _loadtxt(chunk)
        if values.shape != (len(chunk), len(columns)):
          raise ValueError("shape")
      except ValueError as err:
        blanks = _diagnose(path, chunk, first_line, columns)
        if not blanks:
          raise DataError(f"{path}, lines {first_line}..{lines.count}: cannot parse") from err
        blank_at = blanks[0]
        kept = chunk[: blank_at - first_line]
        if not kept:
          continue
        values = _loadtxt(kept)
      yield first_line, values


def _first_location(bad: np.ndarray) -> tuple[int, int]:
  row, column = np.argwhere(bad)[0]
  return int(row), int(column)


def _where(columns: Sequence[str], positions: Sequence[int], column: int) -> str:
  position = positions[column]
  return f"column {position + 1} ({columns[position]})"


def _integer_ids(
  path: str,
  chunk: np.ndarray,
  first_line: int,
  columns: Sequence[str],
  positions: Sequence[int],
  *,
  allow_negative: bool,
) -> np.ndarray:
  """Checks that id columns hold integers (non-negative unless allowed) and casts to int64."""
  values = chunk[:, list(positions)]
  bad = ~np.isfinite(values) | (values != np.floor(values)) | (np.abs(values) >= _EXACT_FLOAT_INT)
  if not allow_negative:
    bad |= values < 0
  if bad.any():
    row, column = _first_location(bad)
    kind = "an integer" if allow_negative else "a non-negative integer"
    raise DataError(
      f"{path}, line {first_line + row}, {_where(columns, positions, column)}: "
      f"{float(values[row, column])!r} is not {kind} id"
    )
  return values.astype(np.int64)


def _finite_features(
  path: str, chunk: np.ndarray, first_line: int, columns: Sequence[str], positions: Sequence[int]
) -> np.ndarray:
  values = chunk[:, list(positions)]
  bad = ~np.isfinite(values)
  if bad.any():
    row, column = _first_location(bad)
    raise DataError(
      f"{path}, line {first_line + row}, {_where(columns, positions, column)}: "
      f"non-finite value {float(values[row, column])!r}"
    )
  return values.astype(np.float32)


def _check_range(path: str, ids: np.ndarray, first_line: int, cardinalities) -> None:
  if cardinalities is None:
    return
  cards = np.asarray(cardinalities, np.int64)
  if cards.shape != (ids.shape[1],):
    raise DataError(f"{len(cards)} cardinalities given for {ids.shape[1]} categorical fields")
  over = ids >= cards
  if over.any():
    row, column = _first_location(over)
    raise DataError(
      f"{path}, line {first_line + row}, {_where(COLUMNS, _CAT_POSITIONS, column)}: "
      f"id {ids[row, column]} "
      f">= cardinality {cards[column]} ({int(over[:, column].sum())} such rows in "
      f"lines {first_line}..{first_line + len(ids) - 1})"
    )


def _bad_label_rows(
  path: str, bad: np.ndarray, first_line: int, what: str, on_bad_labels: str
) -> None:
  if on_bad_labels not in ("raise", "drop"):
    raise DataError(f"on_bad_labels must be 'raise' or 'drop', got {on_bad_labels!r}")
  if on_bad_labels == "raise" and bad.any():
    raise DataError(
      f"{path}: {int(bad.sum())} rows with bad labels ({what}) in lines "
      f"{first_line}..{first_line + len(bad) - 1}, first at line "
      f"{first_line + int(np.argmax(bad))}; pass on_bad_labels='drop' to drop them"
    )


def _warn_dropped(path: str, count: int, what: str) -> None:
  if count:
    warnings.warn(f"{path}: dropped {count} rows with bad labels ({what})", stacklevel=3)


# --------------------------------------------------------------------------
# Processed 82-column CSV.

_PROCESSED_BAD = "click or conversion not in {0, 1}, or conversion without click"


def _processed_chunk(path, first_line, values, cardinalities, on_bad_labels):
  ids = _integer_ids(path, values, first_line, COLUMNS, _CAT_POSITIONS, allow_negative=False)
  if ids.size and ids.max() > _INT32_MAX:
    row, column = _first_location(ids > _INT32_MAX)
    raise DataError(
      f"{path}, line {first_line + row}, {_where(COLUMNS, _CAT_POSITIONS, column)}: "
      f"id {ids[row, column]} does not fit in int32"
    )
  _check_range(path, ids, first_line, cardinalities)
  numerical = _finite_features(path, values, first_line, COLUMNS, _NUM_POSITIONS)
  click, conversion = values[:, 80], values[:, 81]
  bad = ~np.isin(click, (0.0, 1.0)) | ~np.isin(conversion, (0.0, 1.0)) | (conversion > click)
  _bad_label_rows(path, bad, first_line, _PROCESSED_BAD, on_bad_labels)
  labels = np.stack([click, conversion], axis=1).astype(np.float32)
  keep = ~bad
  return ids[keep].astype(np.int32), numerical[keep], labels[keep], int(bad.sum())


def read_aliexpress_csv(
  path,
  *,
  cardinalities: Sequence[int] | None = None,
  on_bad_labels: OnBadLabels = "raise",
  chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> RankingData:
  """Reads one processed AliExpress CSV (82 columns, header) into memory.

  Args:
    path: the CSV file.
    cardinalities: table size per categorical field; default: this file's
      ``max id + 1`` (use `load_aliexpress` to share sizes across splits).
      An id beyond a given size raises ``ValueError`` with its line.
    on_bad_labels: ``"raise"`` or ``"drop"`` (with a warning giving the count).
    chunk_rows: lines parsed per ``np.loadtxt`` call.

  Returns:
    `RankingData` with 16 categorical, 63 numerical fields and labels
    ``(click, conversion)`` named ``("ctr", "ctcvr")``; ``search_id`` is dropped.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.synthetic import generate_aliexpress, write_aliexpress_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> write_aliexpress_csv(generate_aliexpress(100, seed=0), path)
    >>> read_aliexpress_csv(path).categorical.shape
    (100, 16)
  """
  path = _check_file(path)
  capacity = _count_data_lines(path, header=True)
  categorical = np.empty((capacity, 16), np.int32)
  numerical = np.empty((capacity, 63), np.float32)
  labels = np.empty((capacity, 2), np.float32)
  filled = dropped = 0
  for first_line, values in _numeric_chunks(path, COLUMNS, header=True, chunk_rows=chunk_rows):
    cat, num, lab, n_bad = _processed_chunk(path, first_line, values, cardinalities, on_bad_labels)
    n = len(cat)
    categorical[filled : filled + n] = cat
    numerical[filled : filled + n] = num
    labels[filled : filled + n] = lab
    filled += n
    dropped += n_bad
  _warn_dropped(path, dropped, _PROCESSED_BAD)
  categorical, numerical, labels = categorical[:filled], numerical[:filled], labels[:filled]
  cards = tuple(cardinalities) if cardinalities is not None else cardinalities_of(categorical)
  return RankingData(categorical, numerical, labels, cards, TASK_NAMES)


def _require_rows(path: str, split: str, rows: int) -> None:
  if not rows:
    raise DataError(f"{path}: no data rows, so split {split} is empty")


def _split_paths(source, splits: Sequence[str]) -> dict[str, str]:
  if isinstance(source, Mapping):
    return {name: os.fspath(path) for name, path in source.items()}
  directory = os.fspath(source)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"AliExpress directory not found: {directory}")
  return {name: os.path.join(directory, f"{name}.csv") for name in splits}


def load_aliexpress(
  directory_or_files,
  *,
  splits: Sequence[str] = ("train", "test"),
  on_bad_labels: OnBadLabels = "raise",
  chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, RankingData]:
  """Loads the processed AliExpress splits with cardinalities shared across them.

  Args:
    directory_or_files: a directory holding ``{split}.csv`` for each split
      (e.g. ``AliExpress_NL``), or a mapping ``{split_name: csv_path}``.
    splits: split names looked up in a directory.
    on_bad_labels: ``"raise"`` or ``"drop"`` (warns with the count).
    chunk_rows: lines parsed per ``np.loadtxt`` call.

  Returns:
    ``{split: RankingData}``; every split's cardinalities are the per-field
    ``max id + 1`` over all splits.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.synthetic import generate_splits, write_aliexpress_csv
    >>> directory = tempfile.mkdtemp()
    >>> for name, split in generate_splits(200, 0, 100, seed=0).items():
    ...     if len(split):
    ...         write_aliexpress_csv(split, os.path.join(directory, f"{name}.csv"))
    >>> data = load_aliexpress(directory)
    >>> data["train"].cardinalities == data["test"].cardinalities, len(data["test"])
    (True, 100)
  """
  paths = _split_paths(directory_or_files, splits)
  for path in paths.values():
    _check_file(path)
  loaded = {
    name: read_aliexpress_csv(path, on_bad_labels=on_bad_labels, chunk_rows=chunk_rows)
    for name, path in paths.items()
  }
  for name, data in loaded.items():
    _require_rows(paths[name], name, len(data))
  cards = cardinalities_of(*(d.categorical for d in loaded.values()))
  return {
    name: RankingData(d.categorical, d.numerical, d.labels, cards, TASK_NAMES)
    for name, d in loaded.items()
  }


def iter_aliexpress_csv(
  path,
  chunk_rows: int,
  *,
  cardinalities: Sequence[int],
  on_bad_labels: OnBadLabels = "raise",
) -> Iterator[RankingData]:
  """Streams a processed AliExpress CSV as `RankingData` chunks of ``chunk_rows`` lines.

  Only one chunk is held at a time, so files larger than memory can be read.
  With ``on_bad_labels="drop"`` a chunk may have fewer rows, and one warning
  with the total count is issued when the file is exhausted.

  Args:
    path: the CSV file.
    chunk_rows: lines per chunk.
    cardinalities: table sizes (e.g. from `aliexpress_csv_cardinalities`);
      an id beyond them raises ``ValueError`` naming its line.
    on_bad_labels: ``"raise"`` or ``"drop"``.

  Returns:
    An iterator of `RankingData`, in file order.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.synthetic import generate_aliexpress, write_aliexpress_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> data = generate_aliexpress(250, seed=0)
    >>> write_aliexpress_csv(data, path)
    >>> [len(c) for c in iter_aliexpress_csv(path, 100, cardinalities=data.cardinalities)]
    [100, 100, 50]
  """
  path = _check_file(path)
  cards = tuple(int(c) for c in cardinalities)
  dropped = 0
  for first_line, values in _numeric_chunks(path, COLUMNS, header=True, chunk_rows=chunk_rows):
    cat, num, lab, n_bad = _processed_chunk(path, first_line, values, cards, on_bad_labels)
    dropped += n_bad
    if len(cat):
      yield RankingData(cat, num, lab, cards, TASK_NAMES)
  _warn_dropped(path, dropped, _PROCESSED_BAD)


def aliexpress_csv_cardinalities(*paths, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[int, ...]:
  """Per-field ``max id + 1`` over processed CSV files, in one streaming pass.

  Args:
    *paths: processed AliExpress CSV files (every split the model will see).
    chunk_rows: lines parsed at a time.

  Returns:
    16 table sizes.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.synthetic import generate_aliexpress, write_aliexpress_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> data = generate_aliexpress(300, seed=0)
    >>> write_aliexpress_csv(data, path)
    >>> aliexpress_csv_cardinalities(path) == tuple(data.categorical.max(0) + 1)
    True
  """
  best = np.ones(16, np.int64)
  for path in paths:
    for first_line, values in _numeric_chunks(path, COLUMNS, header=True, chunk_rows=chunk_rows):
      ids = _integer_ids(
        os.fspath(path), values, first_line, COLUMNS, _CAT_POSITIONS, allow_negative=False
      )
      if len(ids):
        best = np.maximum(best, ids.max(axis=0) + 1)
  return tuple(int(b) for b in best)


# --------------------------------------------------------------------------
# Raw per-country release.

_RAW_BAD = "item_49 not in {0, 1, 2}"


def _raw_path(directory: str, country: str, kind: str, split: str) -> str:
  base = os.path.join(directory, f"{country}_{kind}_{split}")
  for candidate in (base, base + ".csv"):
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"AliExpress raw file not found: {base} (nor {base}.csv)")


def _read_raw_users(path: str, chunk_rows: int):
  """Returns search ids, raw categorical (int64) and numerical (float32) of a user file."""
  ids, cats, nums, lines = [], [], [], []
  cat_cols = [c - 1 for c in RAW_USER_CATEGORICAL]
  num_cols = [c - 1 for c in RAW_USER_NUMERICAL]
  for first_line, values in _numeric_chunks(
    path, _USER_COLUMNS, header=False, chunk_rows=chunk_rows
  ):
    ids.append(
      _integer_ids(path, values, first_line, _USER_COLUMNS, (0,), allow_negative=True)[:, 0]
    )
    cats.append(
      _integer_ids(path, values, first_line, _USER_COLUMNS, cat_cols, allow_negative=True)
    )
    nums.append(_finite_features(path, values, first_line, _USER_COLUMNS, num_cols))
    lines.append(first_line + np.arange(len(values)))
  if not ids:
    return (
      np.zeros(0, np.int64),
      np.zeros((0, len(cat_cols)), np.int64),
      np.zeros((0, len(num_cols)), np.float32),
      np.zeros(0, np.int64),
    )
  return np.concatenate(ids), np.concatenate(cats), np.concatenate(nums), np.concatenate(lines)


def _read_raw_items(path: str, chunk_rows: int, on_bad_labels: str):
  """Returns search ids, raw categorical, numerical, labels and line numbers of an item file."""
  ids, cats, nums, labels, lines = [], [], [], [], []
  cat_cols = [c - 1 for c in RAW_ITEM_CATEGORICAL]
  num_cols = [c - 1 for c in RAW_ITEM_NUMERICAL]
  dropped = 0
  for first_line, values in _numeric_chunks(
    path, _ITEM_COLUMNS, header=False, chunk_rows=chunk_rows
  ):
    label = values[:, 48]
    bad = ~np.isin(label, (0.0, 1.0, 2.0))
    _bad_label_rows(path, bad, first_line, _RAW_BAD, on_bad_labels)
    keep = ~bad
    dropped += int(bad.sum())
    ids.append(
      _integer_ids(path, values, first_line, _ITEM_COLUMNS, (0,), allow_negative=True)[keep, 0]
    )
    cats.append(
      _integer_ids(path, values, first_line, _ITEM_COLUMNS, cat_cols, allow_negative=True)[keep]
    )
    nums.append(_finite_features(path, values, first_line, _ITEM_COLUMNS, num_cols)[keep])
    label = label[keep]
    labels.append(np.stack([label >= 1, label == 2], axis=1).astype(np.float32))
    lines.append((first_line + np.arange(len(values)))[keep])
  _warn_dropped(path, dropped, _RAW_BAD)
  if not ids:
    return (
      np.zeros(0, np.int64),
      np.zeros((0, len(cat_cols)), np.int64),
      np.zeros((0, len(num_cols)), np.float32),
      np.zeros((0, 2), np.float32),
      np.zeros(0, np.int64),
    )
  return (
    np.concatenate(ids),
    np.concatenate(cats),
    np.concatenate(nums),
    np.concatenate(labels),
    np.concatenate(lines),
  )


def _join(user_path, item_path, users, items):
  user_ids, user_cat, user_num, user_lines = users
  item_ids, item_cat, item_num, labels, item_lines = items
  order = np.argsort(user_ids, kind="stable")
  sorted_ids = user_ids[order]
  duplicate = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
  if duplicate.size:
    later = max(order[duplicate[0]], order[duplicate[0] + 1])
    raise DataError(
      f"{user_path}, line {user_lines[later]}, column 1 (user_1): search id "
      f"{sorted_ids[duplicate[0]]} repeats ({duplicate.size} repeated ids in the file)"
    )
  position = np.searchsorted(sorted_ids, item_ids)
  position = np.minimum(position, max(len(sorted_ids) - 1, 0))
  found = sorted_ids[position] == item_ids if len(sorted_ids) else np.zeros(len(item_ids), bool)
  if not found.all():
    first = int(np.argmin(found))
    raise DataError(
      f"{item_path}, line {item_lines[first]}, column 1 (item_1): {int((~found).sum())} item rows "
      f"have a search id absent from user_1 of {user_path} (first: {item_ids[first]})"
    )
  user_row = order[position]
  categorical = np.concatenate([user_cat[user_row], item_cat], axis=1)
  numerical = np.concatenate([user_num[user_row], item_num], axis=1)
  return categorical, numerical, labels


def load_aliexpress_raw(
  directory,
  country: str,
  *,
  splits: Sequence[str] = ("train", "test"),
  reindex: bool = True,
  on_bad_labels: OnBadLabels = "raise",
  chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, RankingData]:
  """Loads the raw per-country release, joining item rows to their user rows.

  Files ``{country}_user_{split}`` and ``{country}_item_{split}`` (with or
  without a ``.csv`` suffix) are headerless. Every item row is one
  impression; its user row (``user_1 == item_1``, the search id, dropped
  afterwards) supplies the user features. Columns become, in this order:
  categorical_1..16 = user_2..8, user_32, user_33, item_19, 34, 35, 36, 40,
  41, 42; numerical_1..63 = user_9..31 then item_2..48 without the
  categorical item columns (numerical values are copied unscaled). Labels
  ``item_49`` 0/1/2 become (click, conversion) = (0,0)/(1,0)/(1,1).

  Re-indexing (``reindex=True``): each categorical field's raw values over
  the impressions of all splits are sorted and replaced by their rank
  0..K-1, the same map for every split, so sparse or huge raw ids become a
  dense table of size K. With ``reindex=False`` raw ids are kept and must be
  non-negative int32. Either way the result equals `load_aliexpress` on the
  same rows written in the processed format (with the ids it returns).

  Args:
    directory: folder holding the raw files.
    country: country code as it appears in the file names (e.g. ``"NL"``).
    splits: split names.
    reindex: map raw categorical values to dense ids.
    on_bad_labels: ``"raise"`` or ``"drop"`` (warns with the count).
    chunk_rows: lines parsed per ``np.loadtxt`` call.

  Returns:
    ``{split: RankingData}`` with cardinalities shared across splits.

  Example:
    >>> import tempfile, os
    >>> directory = tempfile.mkdtemp()
    >>> user = ",".join(["7"] + ["1"] * 32)
    >>> item = ",".join(["7"] + ["0"] * 47 + ["2"])
    >>> for split in ("train", "test"):
    ...     _ = open(os.path.join(directory, f"NL_user_{split}"), "w").write(user + "\\n")
    ...     _ = open(os.path.join(directory, f"NL_item_{split}"), "w").write(item + "\\n")
    >>> load_aliexpress_raw(directory, "NL")["test"].labels.tolist()
    [[1.0, 1.0]]
  """
  directory = os.fspath(directory)
  paths = {
    split: (
      _raw_path(directory, country, "user", split),
      _raw_path(directory, country, "item", split),
    )
    for split in splits
  }
  joined = {}
  for split, (user_path, item_path) in paths.items():
    users = _read_raw_users(user_path, chunk_rows)
    items = _read_raw_items(item_path, chunk_rows, on_bad_labels)
    _require_rows(user_path, split, len(users[0]))
    _require_rows(item_path, split, len(items[0]))
    joined[split] = _join(user_path, item_path, users, items)
  names = [f"user_{c}" for c in RAW_USER_CATEGORICAL] + [f"item_{c}" for c in RAW_ITEM_CATEGORICAL]
  raw = [cat for cat, _, _ in joined.values()]
  if reindex:
    stacked = np.concatenate(raw) if raw else np.zeros((0, 16), np.int64)
    dense = np.empty(stacked.shape, np.int32)
    for field in range(stacked.shape[1]):
      _, inverse = np.unique(stacked[:, field], return_inverse=True)
      dense[:, field] = inverse.reshape(-1)
    bounds = np.cumsum([0] + [len(r) for r in raw])
    categorical = {split: dense[bounds[i] : bounds[i + 1]] for i, split in enumerate(joined)}
  else:
    categorical = {}
    for split, ids in zip(joined, raw):
      bad = (ids < 0) | (ids > _INT32_MAX)
      if bad.any():
        row, column = _first_location(bad)
        raise DataError(
          f"{paths[split][1 if column >= 9 else 0]}: column {names[column]}: raw id "
          f"{ids[row, column]} is not a non-negative int32 ({int(bad.sum())} values); "
          f"use reindex=True"
        )
      categorical[split] = ids.astype(np.int32)
  cards = cardinalities_of(*categorical.values()) if categorical else (1,) * 16
  return {
    split: RankingData(categorical[split], numerical, labels, cards, TASK_NAMES)
    for split, (_, numerical, labels) in joined.items()
  }
