"""Hybrid IMTL: IMTL-G on the scaled gradients, the IMTL-L Adam step by hand, scales to 1/L."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import standard_batch

from pub_optax.weightings._imtl_hybrid import imtl, imtl_weights

BATCH = standard_batch(4)


def test_equal_projections_of_the_direction_on_full_rank(x64):
  rng = np.random.default_rng(0)
  for gram in BATCH.grams[BATCH.full]:
    s = rng.normal(size=4)
    w = np.asarray(imtl_weights(jnp.asarray(gram), jnp.asarray(s)))
    proj = gram @ w / np.sqrt(np.diagonal(gram))  # d·g_k/‖g_k‖, unchanged by the scales
    np.testing.assert_allclose(proj, proj.mean(), rtol=1e-8)
    np.testing.assert_allclose(np.sum(w * np.exp(-s)), 1.0, rtol=1e-10)  # Σ α = 1


def test_matches_imtl_g_on_explicit_scaled_vectors(x64):
  # The published closed form of IMTL-G on the scaled vectors d_k = e^{s_k} g_k for
  # independent vectors: α ∝ G_s⁻¹ n_s with n_s the norms ‖d_k‖, Σα = 1.
  rng = np.random.default_rng(1)
  j = rng.standard_normal((3, 5))
  s = np.array([0.3, -1.0, 2.0])
  d = np.exp(s)[:, None] * j
  gs = d @ d.T
  alpha = np.linalg.solve(gs, np.linalg.norm(d, axis=1))
  alpha /= alpha.sum()
  w = np.asarray(imtl_weights(jnp.asarray(j @ j.T), jnp.asarray(s)))
  np.testing.assert_allclose(j.T @ w, d.T @ alpha, rtol=1e-10)


def test_weigh_uses_current_scales_then_one_adam_step(x64):
  lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
  w = imtl(lr, init=0.5)
  state = w.init(3, jnp.float64)
  rng = np.random.default_rng(2)
  j = rng.standard_normal((3, 4))
  s = np.full(3, 0.5)
  m = v = np.zeros(3)
  for t in range(1, 4):
    losses = rng.uniform(0.5, 3.0, size=3)
    res = w.weigh(jnp.asarray(j @ j.T), state, jnp.asarray(losses))
    np.testing.assert_allclose(
      np.asarray(res.weights),
      np.asarray(imtl_weights(jnp.asarray(j @ j.T), jnp.asarray(s))),
      rtol=1e-12,
    )
    grad = np.exp(s) * losses - 1.0  # d/ds of e^s L − s
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    s = s - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    state = res.state
    np.testing.assert_allclose(np.asarray(state.log_scales), s, rtol=1e-12)
    assert float(res.residual) < 1e-10


def test_scale_invariance_non_finite_and_missing_losses(x64):
  w = imtl()
  s0 = w.init(2, jnp.float64)
  gram = jnp.array([[4.0, -1.0], [-1.0, 1.0]])
  losses = jnp.array([1.0, 2.0])
  a = w.weigh(gram, s0, losses).weights
  b = w.weigh(gram * 1e-9, s0, losses).weights
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9)
  bad = jax.jit(w.weigh)(gram, s0, jnp.array([jnp.nan, 1.0]))
  assert np.all(np.isnan(np.asarray(bad.weights))) and np.isinf(float(bad.residual))
  np.testing.assert_array_equal(np.asarray(bad.state.log_scales), np.asarray(s0.log_scales))
  with pytest.raises(ValueError, match="task losses"):
    w.weigh(gram, s0, None)
  with pytest.raises(ValueError, match="log_scales"):
    imtl_weights(gram, jnp.zeros(3))
  assert w.needs_losses and w.kind == "gram"
