"""Krum and Multi-Krum: keep the task vectors closest to their neighbours, robust to f outliers.

Krum (Blanchard et al. 2017) aggregates K vectors of which up to f may be
arbitrary (Byzantine). Each vector gets the score

  s_i = Σ_{j ∈ N_i} ‖g_i − g_j‖²,

the sum of its squared distances to its ``K − f − 2`` nearest other vectors, and
the vector of lowest score is kept; Multi-Krum keeps the m lowest scores and
averages them. Distances come from the Gram matrix,
``‖g_i − g_j‖² = G_ii + G_jj − 2 G_ij``, so the weights are ``1/m`` on the selected
tasks and 0 elsewhere. Krum needs ``K > 2f + 2``, checked at trace time.

Ties (equal scores, e.g. identical or zero task vectors) select the lowest task
index, as a stable sort does; away from ties the selection is permutation
equivariant. The weights are invariant to scaling G (up to rounding of the
scores: computed on G divided by its largest diagonal entry).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, check_gram, solve_dtype, stateless, unit_gram
from pub_optax.weightings._linalg import finite_gram

Array = jax.Array


def _check_counts(n_byzantine: int, n_selected: int) -> tuple[int, int]:
  try:
    f, m = operator.index(n_byzantine), operator.index(n_selected)
  except TypeError as err:
    raise ValueError(
      f"n_byzantine and n_selected must be integers, got {n_byzantine!r} and {n_selected!r}"
    ) from err
  if f < 0:
    raise ValueError(f"n_byzantine must be non-negative, got {f}")
  if m < 1:
    raise ValueError(f"n_selected must be at least 1, got {m}")
  return f, m


def krum_scores(gram: Array, n_byzantine: int) -> Array:
  """``(K,)`` Krum scores: each task's sum of squared distances to its ``K − f − 2`` nearest others.

  Computed on G divided by its largest diagonal entry (multiply by ``max_k G_kk``
  for the scores of G itself).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import krum_scores
    >>> j = jnp.array([[0.0], [1.0], [2.0], [10.0]])  # four points on a line
    >>> [round(float(s) * 100, 2) for s in krum_scores(j @ j.T, 1)]  # nearest neighbour
    [1.0, 1.0, 1.0, 64.0]
  """
  k = gram.shape[0]
  g, _, _ = unit_gram(gram)
  sq = jnp.diagonal(g)
  dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)
  dist = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, dist)
  nearest = jnp.sort(dist, axis=1)[:, : k - n_byzantine - 2]
  return jnp.sum(nearest, axis=1)


def krum_weights(gram: Array, n_byzantine: int, n_selected: int = 1) -> Array:
  r"""Multi-Krum weights: ``1/m`` on the m tasks of lowest Krum score, 0 elsewhere.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    n_byzantine: f, the number of vectors that may be arbitrary; needs ``K > 2f + 2``.
    n_selected: m, how many vectors to keep and average (1: Krum; TorchJD's default).

  Returns:
    ``(K,)`` weights summing to 1. NaN when G has a non-finite entry.

  Raises:
    ValueError: at trace time, when ``K ≤ 2f + 2``, ``m > K``, ``f < 0`` or ``m < 1``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import krum_weights
    >>> j = jnp.array([[1.0, 0.0], [1.1, 0.1], [0.9, 0.0], [1.0, -0.05], [-50.0, 40.0]])
    >>> krum_weights(j @ j.T, n_byzantine=1, n_selected=2).tolist()  # the outlier is out
    [0.5, 0.0, 0.0, 0.5, 0.0]

  References:
    Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent", NeurIPS 2017.
  """
  check_gram(gram)
  f, m = _check_counts(n_byzantine, n_selected)
  k = gram.shape[0]
  if k <= 2 * f + 2:
    raise ValueError(
      f"Krum with n_byzantine = {f} needs K > 2f + 2 = {2 * f + 2} tasks, got K = {k}"
    )
  if m > k:
    raise ValueError(f"n_selected = {m} exceeds the number of tasks K = {k}")
  dtype = solve_dtype(gram)
  ok, safe = finite_gram(jnp.asarray(gram, dtype))
  order = jnp.argsort(krum_scores(safe, f), stable=True)
  selected = jnp.zeros((k,), dtype).at[order[:m]].set(1.0 / m)
  return jnp.where(ok, selected, jnp.nan)


def krum(n_byzantine: int, n_selected: int = 1) -> Weighting:
  """Krum (Multi-Krum for ``n_selected > 1``) as a stateless Weighting named ``"krum"``.

  Args:
    n_byzantine, n_selected: see :func:`krum_weights`; checked here, and K against
      them at trace time.

  Returns:
    A :class:`~pub_optax.weightings.Weighting` (residual 0).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import krum
    >>> w = krum(n_byzantine=0)
    >>> j = jnp.array([[0.0], [1.0], [3.0]])
    >>> w.weigh(j @ j.T, w.init(3, jnp.float32), None).weights.tolist()
    [1.0, 0.0, 0.0]

  References:
    Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017.
  """
  f, m = _check_counts(n_byzantine, n_selected)
  return stateless("krum", lambda gram: krum_weights(gram, f, m))
