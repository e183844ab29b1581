"""Realistic synthetic AliExpress data with a known ground truth (the default data).

Rows follow the processed AliExpress schema (16 categorical ids, 63 numerical
features in [0, 1], labels click and click-and-conversion) and its statistics:
about 2.5 % clicks, 2 % of clicks convert, long-tailed (Zipf-like) ids with
table sizes from 10 to 100 000, impressions grouped in search pages that share
the user features.

Ground truth. Per categorical field ``f`` a table ``E_f`` (``C_f x k``,
``N(0, 1)``); user fields sum to ``u``, item fields to ``v`` (each divided by
the square root of its field count). Numerical features are noisy views of
the latents: ``a = B u + eps`` (user columns, per page) or ``B v + eps`` (item
columns, per row), turned into ratios ``sigmoid(a)`` or log-counts
``min(log1p(floor(exp(1.5 a))) / log1p(1000), 1)``. The shared representation
``phi = [u, v, u * v, A x]`` (``4k`` values) is whitened (zero mean, identity
covariance, estimated once on a calibration sample), so every unit vector
``w`` gives a standardised score ``w . phi``. With unit ``w1`` and a unit
``w_perp`` orthogonal to it::

    rho      = 1 - 2 * conflict                  # conflict in [0, 1]
    w2       = rho * w1 + sqrt(1 - rho**2) * w_perp
    P(click)                = sigmoid(b1 + click_signal * w1 . phi)
    P(conversion | click)   = sigmoid(b2 + conversion_signal * w2 . phi)

so the two scores have correlation ``rho``: conflict 0 makes the tasks agree
on the same shared features, 0.5 makes them orthogonal, 1 opposes them.
Intercepts ``b1``, ``b2`` are solved on the calibration sample so that the
click rate and the conversion-per-click rate match ``click_rate`` and
``conversion_rate``. A conversion only happens after a click. Features do not
depend on ``conflict`` (nor does the click label): changing it changes only
conversions. At ``conflict=1`` with the default signals (1.2 and 1.4) the two
factors of ``P(click and conversion)`` nearly cancel, so CTCVR is barely
rankable (Bayes AUC about 0.55); raise ``conversion_signal`` to keep it
learnable. As in the real data, the user fields come first (categorical 1..9,
numerical 1..23), then the item fields.

Reproducibility. Parameters come from ``seed``; rows are made in fixed blocks
of `BLOCK_ROWS`, each from its own generator keyed by ``(seed, stream,
block)``, so the same seed gives identical arrays, `iter_aliexpress_chunks`
gives exactly the rows of `generate_aliexpress` for any chunk size, and
different ``stream`` values give independent samples of the same ground truth
(`generate_splits` uses streams 0, 1, 2 for train, val, test).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pub_optax.ranking.data.aliexpress import COLUMNS, TASK_NAMES
from pub_optax.ranking.data.types import RankingData

__all__ = [
  "BLOCK_ROWS",
  "SyntheticConfig",
  "SyntheticTruth",
  "generate_aliexpress",
  "generate_splits",
  "iter_aliexpress_chunks",
  "write_aliexpress_csv",
  "write_aliexpress_csv_chunks",
]

BLOCK_ROWS = 16384
_CALIBRATION_ROWS = 2 * BLOCK_ROWS
_COUNT_SCALE = float(np.log1p(1000.0))


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Knobs of the synthetic AliExpress generator (all have realistic defaults).

  Attributes:
    conflict: in [0, 1]; correlation of the two tasks' scores is ``1 - 2 conflict``.
    n_categorical: number of categorical fields (16 in AliExpress).
    n_numerical: number of numerical features (63 in AliExpress).
    click_rate: target fraction of impressions clicked.
    conversion_rate: target fraction of clicks that convert (CTCVR rate is
      ``click_rate * conversion_rate``); raise it for quick runs and tests.
    click_signal: scale of the standardised click score (Bayes CTR AUC grows with it).
    conversion_signal: scale of the standardised conversion-given-click score.
    latent_dim: size ``k`` of the latent factors.
    min_cardinality, max_cardinality: table sizes are geometrically spaced
      between these, assigned to fields in a seeded random order.
    cardinalities: explicit table sizes (overrides the two above).
    zipf_exponent: ids follow ``P(rank r) ~ r**-zipf_exponent`` (continuous
      approximation), mapped to ids by a seeded permutation per field.
    mean_page_size: mean number of impressions per search page.
    user_categorical_fraction: share of categorical fields that are user
      fields (the first ones; constant within a search page). AliExpress: 9/16.
    user_numerical_fraction: share of numerical features that are user
      features (the first ones). AliExpress: 23/63.
  """

  conflict: float = 0.5
  n_categorical: int = 16
  n_numerical: int = 63
  click_rate: float = 0.025
  conversion_rate: float = 0.02
  click_signal: float = 1.2
  conversion_signal: float = 1.4
  latent_dim: int = 8
  min_cardinality: int = 10
  max_cardinality: int = 100_000
  cardinalities: tuple[int, ...] | None = None
  zipf_exponent: float = 1.1
  mean_page_size: float = 10.0
  user_categorical_fraction: float = 9 / 16
  user_numerical_fraction: float = 23 / 63

  def __post_init__(self) -> None:
    if not 0.0 <= self.conflict <= 1.0:
      raise ValueError(f"conflict must be in [0, 1], got {self.conflict}")
    for name in ("click_rate", "conversion_rate"):
      value = getattr(self, name)
      if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    if self.n_categorical < 1 or self.n_numerical < 0 or self.latent_dim < 1:
      raise ValueError("need n_categorical >= 1, n_numerical >= 0, latent_dim >= 1")
    if self.cardinalities is not None:
      cards = tuple(int(c) for c in self.cardinalities)
      if len(cards) != self.n_categorical or min(cards) < 1:
        raise ValueError(f"cardinalities: need {self.n_categorical} sizes >= 1, got {cards}")
      object.__setattr__(self, "cardinalities", cards)
    if not 1 <= self.min_cardinality <= self.max_cardinality:
      raise ValueError("need 1 <= min_cardinality <= max_cardinality")
    if self.zipf_exponent <= 0 or self.mean_page_size < 1:
      raise ValueError("need zipf_exponent > 0 and mean_page_size >= 1")
    for name in ("user_categorical_fraction", "user_numerical_fraction"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SyntheticTruth:
  """The hidden ground truth of generated rows.

  Attributes:
    probabilities: float64 ``(N, 2)``: ``P(click)`` and ``P(click and conversion)``,
      aligned with the label columns (their AUCs are the Bayes AUCs).
    click_logit: float64 ``(N,)`` logit of ``P(click)``.
    conversion_logit: float64 ``(N,)`` logit of ``P(conversion | click)``.
    search_ids: int64 ``(N,)`` search page of each row (unique per stream).
  """

  probabilities: np.ndarray
  click_logit: np.ndarray
  conversion_logit: np.ndarray
  search_ids: np.ndarray


def _sigmoid(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclasses.dataclass(frozen=True)
class _Model:
  config: SyntheticConfig
  cardinalities: tuple[int, ...]
  n_user_cat: int
  n_user_num: int
  permutations: tuple[np.ndarray, ...]
  tables: tuple[np.ndarray, ...]
  loadings: np.ndarray  # (n_numerical, k): rows for user then item columns
  is_count: np.ndarray  # (n_numerical,) bool
  dense: np.ndarray  # (n_numerical, k) the A of phi
  mean: np.ndarray  # whitening
  whiten: np.ndarray
  w1: np.ndarray
  w2: np.ndarray
  b1: float
  b2: float


def _zipf_ranks(rng: np.random.Generator, size, cardinality: int, exponent: float) -> np.ndarray:
  """0-based ranks with P(r) ~ (r + 1)**-exponent (continuous inverse CDF)."""
  u = rng.random(size)
  top = cardinality + 1.0
  if abs(exponent - 1.0) < 1e-9:
    ranks = np.exp(u * np.log(top))
  else:
    power = 1.0 - exponent
    ranks = (u * (top**power - 1.0) + 1.0) ** (1.0 / power)
  return np.minimum(ranks.astype(np.int64) - 1, cardinality - 1)


def _squash(a: np.ndarray, is_count: np.ndarray) -> np.ndarray:
  """Maps pre-activations to [0, 1]: log-counts where ``is_count``, else ratios."""
  out = np.empty_like(a)
  counts = np.floor(np.exp(np.minimum(1.5 * a[:, is_count], 30.0)))
  out[:, is_count] = np.minimum(np.log1p(counts) * (1.0 / _COUNT_SCALE), 1.0)
  out[:, ~is_count] = _sigmoid(a[:, ~is_count])
  return out


def _features(model: _Model, rng: np.random.Generator, n_rows: int, page_base: int):
  """Generates one block: ids, numerical features, raw phi and search ids."""
  cfg = model.config
  k = cfg.latent_dim
  sizes = rng.geometric(1.0 / cfg.mean_page_size, size=n_rows)
  n_pages = int(np.searchsorted(np.cumsum(sizes), n_rows) + 1)
  page_of_row = np.repeat(np.arange(n_pages), sizes[:n_pages])[:n_rows]

  def ids_for(fields, count):
    columns = []
    for f in fields:
      ranks = _zipf_ranks(rng, count, model.cardinalities[f], cfg.zipf_exponent)
      columns.append(model.permutations[f][ranks])
    return np.stack(columns, axis=1) if columns else np.zeros((count, 0), np.int64)

  def latent(ids, fields):
    total = np.zeros((len(ids), k))
    for column, f in enumerate(fields):
      total += model.tables[f][ids[:, column]]
    return total / np.sqrt(max(len(fields), 1))

  user_fields = range(model.n_user_cat)
  item_fields = range(model.n_user_cat, cfg.n_categorical)
  user_ids = ids_for(user_fields, n_pages)
  item_ids = ids_for(item_fields, n_rows)
  u_page = latent(user_ids, user_fields)
  v = latent(item_ids, item_fields)
  u = u_page[page_of_row]

  nu = model.n_user_num
  x = np.empty((n_rows, cfg.n_numerical), np.float32)
  a_user = (u_page @ model.loadings[:nu].T).astype(np.float32)
  a_user += rng.standard_normal((n_pages, nu), dtype=np.float32)
  x[:, :nu] = _squash(a_user, model.is_count[:nu])[page_of_row]
  a_item = (v @ model.loadings[nu:].T).astype(np.float32)
  a_item += rng.standard_normal((n_rows, cfg.n_numerical - nu), dtype=np.float32)
  x[:, nu:] = _squash(a_item, model.is_count[nu:])

  phi = np.concatenate([u, v, u * v, x @ model.dense.astype(np.float32)], axis=1)
  categorical = np.concatenate([user_ids[page_of_row], item_ids], axis=1).astype(np.int32)
  search_ids = page_base + page_of_row
  return categorical, x, phi, search_ids


def _scores(model: _Model, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Standardised task scores ``w . whiten(phi)`` as float64."""
  directions = model.whiten @ np.stack([model.w1, model.w2], axis=1)
  offsets = model.mean @ directions
  scores = phi @ directions.astype(phi.dtype)
  return scores[:, 0] - offsets[0], scores[:, 1] - offsets[1]


def _solve_intercept(target: float, mean_of) -> float:
  low, high = -40.0, 40.0
  for _ in range(100):
    mid = 0.5 * (low + high)
    if mean_of(mid) < target:
      low = mid
    else:
      high = mid
  return 0.5 * (low + high)


@functools.lru_cache(maxsize=4)
def _build_model(seed: int, config: SyntheticConfig) -> _Model:
  rng = np.random.default_rng([seed, 0, 0])
  cfg = config
  k = cfg.latent_dim
  if cfg.cardinalities is not None:
    cards = cfg.cardinalities
  else:
    sizes = np.round(np.geomspace(cfg.min_cardinality, cfg.max_cardinality, cfg.n_categorical))
    cards = tuple(int(c) for c in rng.permutation(sizes.astype(np.int64)))
  n_user_cat = int(round(cfg.user_categorical_fraction * cfg.n_categorical))
  n_user_num = int(round(cfg.user_numerical_fraction * cfg.n_numerical))
  permutations = tuple(rng.permutation(c) for c in cards)
  tables = tuple(rng.standard_normal((c, k)) for c in cards)
  loadings = rng.standard_normal((cfg.n_numerical, k)) / np.sqrt(k)
  is_count = rng.random(cfg.n_numerical) < 0.5
  dense = rng.standard_normal((cfg.n_numerical, k)) / np.sqrt(max(cfg.n_numerical, 1))
  partial = _Model(
    cfg,
    cards,
    n_user_cat,
    n_user_num,
    permutations,
    tables,
    loadings,
    is_count,
    dense,
    np.zeros(4 * k),
    np.eye(4 * k),
    np.zeros(4 * k),
    np.zeros(4 * k),
    0.0,
    0.0,
  )

  calibration = np.random.default_rng([seed, 1, 0])
  _, _, phi, _ = _features(partial, calibration, _CALIBRATION_ROWS, 0)
  mean = phi.mean(axis=0)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(phi, rowvar=False))
  keep = eigenvalues > 1e-9 * eigenvalues.max()
  whiten = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep])
  dim = int(keep.sum())
  w1 = rng.standard_normal(dim)
  w1 /= np.linalg.norm(w1)
  w_perp = rng.standard_normal(dim)
  w_perp -= (w_perp @ w1) * w1
  w_perp /= np.linalg.norm(w_perp)
  rho = 1.0 - 2.0 * cfg.conflict
  w2 = rho * w1 + np.sqrt(max(1.0 - rho * rho, 0.0)) * w_perp

  model = dataclasses.replace(partial, mean=mean, whiten=whiten, w1=w1, w2=w2)
  s1, s2 = _scores(model, phi)
  b1 = _solve_intercept(cfg.click_rate, lambda b: _sigmoid(b + cfg.click_signal * s1).mean())
  p_click = _sigmoid(b1 + cfg.click_signal * s1)
  b2 = _solve_intercept(
    cfg.conversion_rate,
    lambda b: (p_click * _sigmoid(b + cfg.conversion_signal * s2)).sum() / p_click.sum(),
  )
  return dataclasses.replace(model, b1=float(b1), b2=float(b2))


def _block(model: _Model, seed: int, stream: int, index: int):
  rng = np.random.default_rng([seed, 2 + stream, index])
  categorical, numerical, phi, search_ids = _features(
    model, rng, BLOCK_ROWS, (stream << 40) + index * BLOCK_ROWS
  )
  s1, s2 = _scores(model, phi)
  cfg = model.config
  click_logit = model.b1 + cfg.click_signal * s1
  conversion_logit = model.b2 + cfg.conversion_signal * s2
  p_click = _sigmoid(click_logit)
  p_conversion = _sigmoid(conversion_logit)
  click = rng.random(BLOCK_ROWS) < p_click
  conversion = click & (rng.random(BLOCK_ROWS) < p_conversion)
  labels = np.stack([click, conversion], axis=1).astype(np.float32)
  truth = (
    np.stack([p_click, p_click * p_conversion], axis=1),
    click_logit,
    conversion_logit,
    search_ids,
  )
  return categorical, numerical, labels, truth


def _check_seed(seed: int) -> int:
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  return int(seed)


def iter_aliexpress_chunks(
  n_rows: int,
  chunk_rows: int,
  seed: int,
  *,
  stream: int = 0,
  return_truth: bool = False,
  **knobs: Any,
) -> Iterator[RankingData] | Iterator[tuple[RankingData, SyntheticTruth]]:
  """Streams synthetic AliExpress rows in chunks; they equal `generate_aliexpress`'s rows.

  Args:
    n_rows: total number of rows.
    chunk_rows: rows per chunk (the last may be shorter).
    seed: non-negative integer; fixes the ground truth and the rows.
    stream: which independent sample of the same ground truth (0, 1, 2, ...).
    return_truth: also yield the `SyntheticTruth` of each chunk.
    **knobs: fields of `SyntheticConfig` (``conflict``, ``click_rate``, ...).

  Returns:
    An iterator of `RankingData` (or ``(RankingData, SyntheticTruth)``).
    Cardinalities are the configured table sizes, identical for every chunk.

  Example:
    >>> chunks = list(iter_aliexpress_chunks(1000, 400, seed=0))
    >>> [len(c) for c in chunks]
    [400, 400, 200]
  """
  seed = _check_seed(seed)
  if chunk_rows < 1 or n_rows < 0 or stream < 0:
    raise ValueError("need chunk_rows >= 1, n_rows >= 0 and stream >= 0")
  model = _build_model(seed, SyntheticConfig(**knobs))
  cached: dict[int, tuple] = {}

  def block(index: int) -> tuple:
    if index not in cached:
      cached.clear()
      cached[index] = _block(model, seed, stream, index)
    return cached[index]

  for start in range(0, n_rows, chunk_rows):
    size = min(chunk_rows, n_rows - start)
    cfg = model.config
    categorical = np.empty((size, cfg.n_categorical), np.int32)
    numerical = np.empty((size, cfg.n_numerical), np.float32)
    labels = np.empty((size, 2), np.float32)
    truth = (np.empty((size, 2)), np.empty(size), np.empty(size), np.empty(size, np.int64))
    row = start
    while row < start + size:
      index, offset = divmod(row, BLOCK_ROWS)
      take = min(BLOCK_ROWS - offset, start + size - row)
      source = block(index)
      target = slice(row - start, row - start + take)
      for out, values in zip((categorical, numerical, labels, *truth), (*source[:3], *source[3])):
        out[target] = values[offset : offset + take]
      row += take
    data = RankingData(categorical, numerical, labels, model.cardinalities, TASK_NAMES)
    yield (data, SyntheticTruth(*truth)) if return_truth else data


def generate_aliexpress(
  n_rows: int,
  *,
  seed: int,
  conflict: float = 0.5,
  n_categorical: int = 16,
  n_numerical: int = 63,
  stream: int = 0,
  return_truth: bool = False,
  **knobs: Any,
) -> RankingData | tuple[RankingData, SyntheticTruth]:
  """Generates ``n_rows`` realistic AliExpress-schema rows with a known ground truth.

  See the module docstring for the model; `SyntheticConfig` lists the knobs.

  Args:
    n_rows: number of impressions.
    seed: non-negative integer; same seed and knobs give identical arrays.
    conflict: in [0, 1]; 0 aligned tasks, 0.5 orthogonal, 1 opposed.
    n_categorical: categorical fields (16 for the real schema).
    n_numerical: numerical features (63 for the real schema).
    stream: independent sample index of the same ground truth.
    return_truth: also return the `SyntheticTruth` (true probabilities, logits,
      search ids).
    **knobs: other `SyntheticConfig` fields (``click_rate``, ``conversion_rate``,
      ``click_signal``, ...).

  Returns:
    `RankingData` with tasks ``("ctr", "ctcvr")`` and cardinalities equal to
    the configured table sizes, or ``(data, truth)``.

  Example:
    >>> data = generate_aliexpress(20000, seed=0)
    >>> data.categorical.shape, data.numerical.shape
    ((20000, 16), (20000, 63))
    >>> bool(0.015 < data.labels[:, 0].mean() < 0.035)
    True
  """
  chunks = list(
    iter_aliexpress_chunks(
      n_rows,
      max(n_rows, 1),
      seed=seed,
      stream=stream,
      return_truth=True,
      conflict=conflict,
      n_categorical=n_categorical,
      n_numerical=n_numerical,
      **knobs,
    )
  )
  if chunks:
    data, truth = chunks[0]
  else:
    model = _build_model(
      _check_seed(seed),
      SyntheticConfig(
        conflict=conflict, n_categorical=n_categorical, n_numerical=n_numerical, **knobs
      ),
    )
    data = RankingData(
      np.zeros((0, n_categorical), np.int32),
      np.zeros((0, n_numerical), np.float32),
      np.zeros((0, 2), np.float32),
      model.cardinalities,
      TASK_NAMES,
    )
    truth = SyntheticTruth(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
  return (data, truth) if return_truth else data


def generate_splits(
  n_train: int,
  n_val: int,
  n_test: int,
  seed: int,
  conflict: float = 0.5,
  *,
  return_truth: bool = False,
  **knobs: Any,
) -> dict[str, RankingData] | dict[str, tuple[RankingData, SyntheticTruth]]:
  """Train/val/test samples of one ground truth (streams 0, 1, 2), sharing cardinalities.

  Args:
    n_train, n_val, n_test: rows per split (0 gives an empty split).
    seed: fixes the ground truth and the rows.
    conflict: see `generate_aliexpress`.
    return_truth: values become ``(data, truth)`` pairs.
    **knobs: other `SyntheticConfig` fields.

  Returns:
    ``{"train", "val", "test"}`` to `RankingData` (or pairs); cardinalities are
    the configured table sizes, shared by all splits.

  Example:
    >>> splits = generate_splits(1000, 200, 300, seed=1)
    >>> {k: len(v) for k, v in splits.items()}
    {'train': 1000, 'val': 200, 'test': 300}
  """
  sizes = {"train": n_train, "val": n_val, "test": n_test}
  return {
    name: generate_aliexpress(
      n, seed=seed, conflict=conflict, stream=stream, return_truth=return_truth, **knobs
    )
    for stream, (name, n) in enumerate(sizes.items())
  }


def _format_rows(data: RankingData, search_ids: np.ndarray) -> str:
  if data.n_categorical != 16 or data.n_numerical != 63 or data.n_tasks != 2:
    raise ValueError(
      "the processed AliExpress format needs 16 categorical, 63 numerical fields and "
      f"2 tasks, got {data.n_categorical}, {data.n_numerical}, {data.n_tasks}"
    )
  search_ids = np.asarray(search_ids).reshape(-1)
  if search_ids.shape != (len(data),):
    raise ValueError(f"search_ids: need {len(data)} ids, got {search_ids.size}")
  template = "%d," * 17 + "%.9g," * 63 + "%d,%d\n"
  columns = [search_ids.astype(np.int64).tolist()]
  columns += data.categorical.T.tolist()
  columns += data.numerical.T.tolist()
  columns += data.labels.astype(np.int64).T.tolist()
  return "".join(template % row for row in zip(*columns))


def write_aliexpress_csv_chunks(
  chunks: Iterable[tuple[RankingData, np.ndarray | None]], path
) -> None:
  """Writes ``(data, search_ids)`` chunks as one processed 82-column AliExpress CSV.

  The file is written to a temporary file in the same directory and moved into
  place with ``os.replace``, so readers never see a partial file. Numerical
  values are written with 9 significant digits, which float32 reads back
  exactly. ``search_ids=None`` numbers the rows consecutively.

  Args:
    chunks: iterable of ``(RankingData, search_ids or None)``.
    path: destination file.

  Returns:
    None.

  Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> chunks = iter_aliexpress_chunks(500, 200, seed=0, return_truth=True)
    >>> write_aliexpress_csv_chunks(((d, t.search_ids) for d, t in chunks), path)
    >>> sum(1 for _ in open(path))
    501
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  handle = tempfile.NamedTemporaryFile(
    "w", dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp", delete=False
  )
  try:
    with handle:
      handle.write(",".join(COLUMNS) + "\n")
      offset = 0
      for data, search_ids in chunks:
        if search_ids is None:
          search_ids = np.arange(offset, offset + len(data))
        handle.write(_format_rows(data, search_ids))
        offset += len(data)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(handle.name, path)
  except BaseException:
    if os.path.exists(handle.name):
      os.remove(handle.name)
    raise


def write_aliexpress_csv(data: RankingData, path, *, search_ids: np.ndarray | None = None) -> None:
  """Writes ``data`` as a processed 82-column AliExpress CSV, atomically.

  Args:
    data: 16 categorical, 63 numerical fields, labels (click, click-and-conversion).
    path: destination file (replaced atomically).
    search_ids: ``(N,)`` search page ids (e.g. ``truth.search_ids``); default
      ``0..N-1``.

  Returns:
    None.

  Example:
    >>> import tempfile, os
    >>> from pub_optax.ranking.data.aliexpress import read_aliexpress_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "test.csv")
    >>> data = generate_aliexpress(300, seed=0)
    >>> write_aliexpress_csv(data, path)
    >>> bool((read_aliexpress_csv(path, cardinalities=data.cardinalities).numerical
    ...       == data.numerical).all())
    True
  """
  write_aliexpress_csv_chunks([(data, search_ids)], path)
