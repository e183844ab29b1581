"""The in-memory container every ranking loader returns: `RankingData`.

A data set for multi-task ranking is three row-aligned arrays (categorical ids,
numerical features, binary labels per task) plus the embedding table size of
every categorical field and the task names. `RankingData` checks all of that
once, at construction, so a model never indexes past an embedding table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
  "DataError",
  "RankingData",
  "cardinalities_of",
  "concatenate",
  "require_both_classes",
  "shared_cardinalities",
  "with_cardinalities",
]


class DataError(ValueError):
  """Data that cannot be used: a malformed or unreadable file, or unusable rows.

  The message is one line naming the file, the 1-based line number and the column where
  they apply.
  """


def _as_int32_ids(values: Any) -> np.ndarray:
  array = np.asarray(values)
  if array.dtype == np.int32:
    return array
  if array.dtype.kind not in "iub":
    raise DataError(f"categorical: expected integer ids, got dtype {array.dtype}")
  if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
    raise DataError("categorical: ids do not fit in int32")
  return array.astype(np.int32)


def _as_float32(name: str, values: Any) -> np.ndarray:
  array = np.asarray(values)
  if array.dtype == np.float32:
    return array
  if array.dtype.kind not in "fiub":
    raise DataError(f"{name}: expected a numeric array, got dtype {array.dtype}")
  return array.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class RankingData:
  """Row-aligned features and labels of a multi-task ranking data set.

  Arrays are converted on construction to the canonical dtypes (int32 ids,
  float32 features and labels; a non-integer id array is an error) and then
  validated: 2-D shapes with the same number of rows, one cardinality per
  categorical field, one name per task, ids in ``[0, cardinality)``, finite
  numerical features and labels in ``{0, 1}``. Every failure raises
  ``ValueError`` naming the field and the number of offending rows.

  Attributes:
    categorical: int32 ``(N, n_categorical)`` ids, ``0 <= id < cardinality``.
    numerical: float32 ``(N, n_numerical)`` features (may have zero columns).
    labels: float32 ``(N, n_tasks)`` in ``{0, 1}``. For AliExpress and
      Ali-CCP column 0 is click (CTR) and column 1 is click-and-conversion
      (CTCVR, evaluated over all impressions).
    cardinalities: embedding table size of each categorical field.
    task_names: one name per label column, e.g. ``("ctr", "ctcvr")``.

  Example:
    >>> import numpy as np
    >>> data = RankingData(
    ...     categorical=np.array([[0, 2], [1, 0]], np.int32),
    ...     numerical=np.zeros((2, 3), np.float32),
    ...     labels=np.array([[1, 0], [0, 0]], np.float32),
    ...     cardinalities=(2, 3), task_names=("ctr", "ctcvr"))
    >>> len(data), data.take(np.array([1])).categorical.tolist()
    (2, [[1, 0]])
  """

  categorical: np.ndarray
  numerical: np.ndarray
  labels: np.ndarray
  cardinalities: tuple[int, ...]
  task_names: tuple[str, ...]

  def __post_init__(self) -> None:
    categorical = _as_int32_ids(self.categorical)
    numerical = _as_float32("numerical", self.numerical)
    labels = _as_float32("labels", self.labels)
    cardinalities = tuple(int(c) for c in self.cardinalities)
    task_names = tuple(str(t) for t in self.task_names)
    for name, array in (("categorical", categorical), ("numerical", numerical), ("labels", labels)):
      if array.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array, got shape {array.shape}")
    n = categorical.shape[0]
    for name, array in (("numerical", numerical), ("labels", labels)):
      if array.shape[0] != n:
        raise DataError(f"{name}: has {array.shape[0]} rows but categorical has {n}")
    if len(cardinalities) != categorical.shape[1]:
      raise DataError(
        f"cardinalities: {len(cardinalities)} given for {categorical.shape[1]} categorical fields"
      )
    if len(task_names) != labels.shape[1]:
      raise DataError(f"task_names: {len(task_names)} given for {labels.shape[1]} label columns")
    for field, card in enumerate(cardinalities):
      if card < 1:
        raise DataError(f"categorical field {field}: cardinality {card} < 1")
    if n:
      low = (categorical < 0).sum(axis=0)
      high = (categorical >= np.asarray(cardinalities, np.int64)).sum(axis=0)
      for field in range(categorical.shape[1]):
        if low[field]:
          raise DataError(f"categorical field {field}: {low[field]} ids < 0")
        if high[field]:
          raise DataError(
            f"categorical field {field}: {high[field]} ids >= cardinality {cardinalities[field]}"
          )
      bad_numerical = (~np.isfinite(numerical)).sum(axis=0)
      for column in np.flatnonzero(bad_numerical):
        raise DataError(f"numerical field {column}: {bad_numerical[column]} non-finite values")
      bad_labels = ((labels != 0) & (labels != 1)).sum(axis=0)
      for task in np.flatnonzero(bad_labels):
        raise DataError(
          f"labels task {task} ({task_names[task]}): {bad_labels[task]} values not in {{0, 1}}"
        )
    object.__setattr__(self, "categorical", categorical)
    object.__setattr__(self, "numerical", numerical)
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "cardinalities", cardinalities)
    object.__setattr__(self, "task_names", task_names)

  def __len__(self) -> int:
    return int(self.categorical.shape[0])

  @property
  def n_categorical(self) -> int:
    """Number of categorical fields."""
    return int(self.categorical.shape[1])

  @property
  def n_numerical(self) -> int:
    """Number of numerical features."""
    return int(self.numerical.shape[1])

  @property
  def n_tasks(self) -> int:
    """Number of label columns (tasks)."""
    return int(self.labels.shape[1])

  def take(self, index: Any) -> RankingData:
    """Returns the rows selected by ``index`` (integer array, boolean mask or slice).

    Args:
      index: anything numpy accepts as a row index on axis 0.

    Returns:
      A new `RankingData` with the same cardinalities and task names.

    Example:
      >>> import numpy as np
      >>> data = RankingData(np.zeros((4, 1), np.int32), np.zeros((4, 0), np.float32),
      ...                    np.zeros((4, 1), np.float32), (1,), ("ctr",))
      >>> len(data.take(slice(1, 3)))
      2
    """
    if isinstance(index, (int, np.integer)):
      index = np.array([index])
    return RankingData(
      categorical=self.categorical[index],
      numerical=self.numerical[index],
      labels=self.labels[index],
      cardinalities=self.cardinalities,
      task_names=self.task_names,
    )


def cardinalities_of(*categoricals: np.ndarray) -> tuple[int, ...]:
  """Per-field ``max id + 1`` over several id arrays (at least 1 per field).

  Args:
    *categoricals: integer arrays of shape ``(N_i, F)`` with the same ``F``.

  Returns:
    A tuple of ``F`` table sizes.

  Example:
    >>> import numpy as np
    >>> cardinalities_of(np.array([[0, 4]]), np.array([[2, 1]]))
    (3, 5)
  """
  if not categoricals:
    raise DataError("cardinalities_of: give at least one array")
  widths = {np.shape(c)[1] for c in categoricals}
  if len(widths) != 1:
    raise DataError(f"cardinalities_of: arrays have different field counts {sorted(widths)}")
  width = widths.pop()
  best = np.zeros(width, np.int64)
  for array in categoricals:
    if len(array):
      best = np.maximum(best, np.asarray(array).max(axis=0).astype(np.int64) + 1)
  return tuple(int(max(b, 1)) for b in best)


def with_cardinalities(data: RankingData, cardinalities: Sequence[int]) -> RankingData:
  """Returns ``data`` re-typed with other embedding table sizes (validated).

  Args:
    data: the rows.
    cardinalities: the new table size per categorical field.

  Returns:
    A `RankingData` sharing the arrays of ``data``.

  Example:
    >>> import numpy as np
    >>> data = RankingData(np.array([[1]], np.int32), np.zeros((1, 0), np.float32),
    ...                    np.zeros((1, 1), np.float32), (2,), ("ctr",))
    >>> with_cardinalities(data, (10,)).cardinalities
    (10,)
  """
  return dataclasses.replace(data, cardinalities=tuple(int(c) for c in cardinalities))


def shared_cardinalities(*datasets: RankingData) -> tuple[RankingData, ...]:
  """Re-types several splits with per-field ``max id + 1`` over all of them.

  A test id beyond the train maximum would otherwise index past the
  embedding table; compute sizes over every split the model will see.

  Args:
    *datasets: splits with the same fields.

  Returns:
    The splits, in order, each carrying the shared cardinalities.

  Example:
    >>> import numpy as np
    >>> def split(ids):
    ...     ids = np.array(ids, np.int32)
    ...     return RankingData(ids, np.zeros((len(ids), 0), np.float32),
    ...                        np.zeros((len(ids), 1), np.float32),
    ...                        tuple(ids.max(0) + 1), ("ctr",))
    >>> train, test = shared_cardinalities(split([[0, 1]]), split([[3, 0]]))
    >>> train.cardinalities, test.cardinalities
    ((4, 2), (4, 2))
  """
  cards = cardinalities_of(*(d.categorical for d in datasets))
  return tuple(with_cardinalities(d, cards) for d in datasets)


def concatenate(datasets: Sequence[RankingData] | Mapping[str, RankingData]) -> RankingData:
  """Stacks the rows of several data sets with the same fields and tasks.

  The result's cardinalities are the per-field maximum of the inputs'.

  Args:
    datasets: a non-empty sequence (or mapping, values in order) of data sets.

  Returns:
    One `RankingData` with all rows, in order.

  Example:
    >>> import numpy as np
    >>> one = RankingData(np.zeros((2, 1), np.int32), np.zeros((2, 0), np.float32),
    ...                   np.zeros((2, 1), np.float32), (1,), ("ctr",))
    >>> len(concatenate([one, one]))
    4
  """
  parts = list(datasets.values()) if isinstance(datasets, Mapping) else list(datasets)
  if not parts:
    raise DataError("concatenate: no data sets given")
  names = {p.task_names for p in parts}
  if len(names) != 1:
    raise DataError(f"concatenate: task names differ: {sorted(names)}")
  return RankingData(
    categorical=np.concatenate([p.categorical for p in parts]),
    numerical=np.concatenate([p.numerical for p in parts]),
    labels=np.concatenate([p.labels for p in parts]),
    cardinalities=tuple(int(c) for c in np.max([p.cardinalities for p in parts], axis=0)),
    task_names=parts[0].task_names,
  )


def require_both_classes(splits: Mapping[str, RankingData]) -> None:
  """Checks that every task of every split has positives and negatives.

  AUC, early stopping on it and the reported test metrics all need both classes: without
  them no epoch can be scored and training would report an untrained model.

  Args:
    splits: ``{name: RankingData}``, e.g. train, val and test.

  Raises:
    DataError: naming the first split and task that lack a class, with both counts.

  Example:
    >>> import numpy as np
    >>> data = RankingData(np.zeros((2, 1), np.int32), np.zeros((2, 0), np.float32),
    ...                    np.array([[0.0], [0.0]], np.float32), (1,), ("ctr",))
    >>> require_both_classes({"val": data})
    Traceback (most recent call last):
    ...
    pub_optax.ranking.data.types.DataError: split val, task ctr: 0 positives and 2 negatives; ...
  """
  for name, data in splits.items():
    if not len(data):
      raise DataError(f"split {name} has no rows")
    positives = data.labels.sum(axis=0).astype(np.int64)
    for task, count in enumerate(positives):
      if count == 0 or count == len(data):
        raise DataError(
          f"split {name}, task {data.task_names[task]}: {count} positives and "
          f"{len(data) - count} negatives; AUC and early stopping need both (use more rows, a "
          "larger validation fraction or another split)"
        )
