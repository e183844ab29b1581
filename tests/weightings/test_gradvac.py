"""GradVac on the Gram matrix equals Algorithm 1 on explicit vectors; adjusted pairs hit their target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch

from pub_optax.weightings._gradvac import gradvac, gradvac_weights
from pub_optax.weightings._pcgrad import pcgrad_weights, random_orders

BATCH = standard_batch(4)


def direct_gradvac(vectors, targets, orders, beta):
  """Algorithm 1 of Wang et al. on explicit vectors (test-only); checks Eq. 2's effect too."""
  targets = targets.copy()
  out = np.zeros(vectors.shape[1])
  norms = np.linalg.norm(vectors, axis=1)
  live = norms > 1e-12 * norms.max()
  for i, order in enumerate(orders):
    g = vectors[i].copy()
    for j in order:
      norm_i = np.linalg.norm(g)
      if j == i or not live[j] or norm_i <= 1e-12 * norms[i]:
        continue
      cos = np.clip(g @ vectors[j] / (norm_i * norms[j]), -1.0, 1.0)
      target = targets[i, j]
      if cos < target:
        coef = norm_i * (target * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - target**2))
        g = g + coef / (norms[j] * np.sqrt(1 - target**2)) * vectors[j]
        # The defining condition: the adjusted pair's cosine is the target (when g_i' and
        # g_j span a plane; collinear vectors, as in rank one, cannot reach it).
        if abs(cos) < 1 - 1e-6:
          new_cos = g @ vectors[j] / (np.linalg.norm(g) * norms[j])
          np.testing.assert_allclose(new_cos, target, atol=1e-9)
      targets[i, j] = (1 - beta) * target + beta * cos
    out += g
  return out, targets


def _random_targets(rng, k):
  t = rng.uniform(-0.9, 0.9, size=(k, k))
  np.fill_diagonal(t, 0.0)
  return t


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-10)])
def test_equals_algorithm_one_with_the_same_orders_and_targets(dtype, tol):
  rng = np.random.default_rng(0)
  beta = 0.3
  keys = jax.random.split(jax.random.PRNGKey(0), len(BATCH.grams))
  orders = np.asarray(jax.vmap(lambda kk: random_orders(kk, 4))(keys))
  targets = np.stack([_random_targets(rng, 4) for _ in BATCH.grams])
  with jax.enable_x64(dtype == jnp.float64):
    fn = jax.jit(jax.vmap(lambda g, t, o: gradvac_weights(g, t, o, beta)))
    w, new_t = fn(jnp.asarray(BATCH.grams, dtype), jnp.asarray(targets, dtype), orders)
    assert w.dtype == jnp.promote_types(dtype, jnp.float32)
  w, new_t = np.asarray(w, np.float64), np.asarray(new_t, np.float64)
  for j, wi, ti, t0, order, zero in zip(BATCH.vectors, w, new_t, targets, orders, BATCH.zero):
    assert np.all(np.isfinite(wi))
    if zero:
      continue
    ref, ref_t = direct_gradvac(j, t0, order, beta)
    size = np.abs(j).max() * np.abs(wi).sum()
    full = np.linalg.matrix_rank(j) == len(j)
    np.testing.assert_allclose(j.T @ wi, ref, atol=(tol if full else 1e3 * tol) * size)
    # In rank one a pair can cancel g_i' to rounding; its later cosines are then noise.
    if np.linalg.matrix_rank(j) > 1:
      np.testing.assert_allclose(ti, ref_t, atol=tol)


def test_zero_targets_give_pcgrad_and_scale_invariance(x64):
  orders = np.asarray(random_orders(jax.random.PRNGKey(3), 4))
  for gram in BATCH.grams[-5:]:
    w, _ = gradvac_weights(jnp.asarray(gram), jnp.zeros((4, 4)), orders)
    np.testing.assert_allclose(
      np.asarray(w), np.asarray(pcgrad_weights(jnp.asarray(gram), orders)), rtol=1e-10
    )
    w_big, _ = gradvac_weights(jnp.asarray(gram * 1e9), jnp.zeros((4, 4)), orders)
    np.testing.assert_allclose(np.asarray(w_big), np.asarray(w), rtol=1e-9)


def test_weighting_state_targets_follow_the_ema(x64):
  w = gradvac(beta=0.5, seed=1)
  weigh = jax.jit(w.weigh)
  state = w.init(2, jnp.float64)
  cos = EXAMPLE_GRAM[0, 1] / np.sqrt(EXAMPLE_GRAM[0, 0] * EXAMPLE_GRAM[1, 1])
  res = weigh(jnp.asarray(EXAMPLE_GRAM), state, None)
  np.testing.assert_allclose(np.asarray(res.state.targets), [[0, cos / 2], [cos / 2, 0]])
  # First step with zero targets is PCGrad: 1 + 22/18 and 1 + 22/38.
  np.testing.assert_allclose(np.asarray(res.weights), [1 + 22 / 18, 1 + 22 / 38], rtol=1e-12)
  again = weigh(jnp.asarray(EXAMPLE_GRAM), res.state, None)
  assert not np.array_equal(np.asarray(again.state.key), np.asarray(res.state.key))
  # Target cos/2 > cos: the pair is adjusted to cosine cos/2, less than to orthogonality.
  assert np.all(np.asarray(again.weights) < np.asarray(res.weights))
  bad = weigh(jnp.full((2, 2), jnp.nan), res.state, None)
  assert np.all(np.isnan(np.asarray(bad.weights))) and np.isinf(float(bad.residual))
  np.testing.assert_array_equal(np.asarray(bad.state.targets), np.asarray(res.state.targets))
  with pytest.raises(ValueError, match="beta"):
    gradvac(beta=1.5)
