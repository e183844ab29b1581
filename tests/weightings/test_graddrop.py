"""GradDrop: the paper's sign-dropout mask replayed in numpy from the same uniform draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings import graddrop, graddrop_leaf

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 4
_RNG = np.random.default_rng(0)
# Two leaves; some columns where every task agrees in sign, and an all-zero column.
W = _RNG.normal(size=(K, 3, 5))
W[:, 0, 0] = np.abs(W[:, 0, 0])
W[:, 0, 1] = -np.abs(W[:, 0, 1])
W[:, 0, 2] = 0.0
B = _RNG.normal(size=(K, 7))
VECTORS = (W, B)


def paper_graddrop(vectors, uniforms, leak):
  """Algorithm 1 (lines 10-15) of Chen et al. 2020 with the leak of TorchJD, test-only."""
  outputs, coefficients = [], []
  for g, u in zip(vectors, uniforms):
    total, mass = g.sum(0), np.abs(g).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      p = np.where(mass > 0, 0.5 * (1 + total / mass), 0.5)
    mask = (p > u) * (g > 0) + (p < u) * (g < 0)
    lk = np.reshape(leak, (-1,) + (1,) * (g.ndim - 1))
    coeff = lk + (1 - lk) * mask
    outputs.append((coeff * g).sum(0))
    coefficients.append(coeff.reshape(g.shape[0], -1))
  weights = np.concatenate(coefficients, axis=1).mean(axis=1)
  return outputs, weights


def _draws(seed, shapes, dtype=jnp.float32):
  """The uniform draws the weighting documents: fold_in(i) of the second half of the split."""
  _, sub = jax.random.split(jax.random.PRNGKey(seed))
  return [np.asarray(jax.random.uniform(jax.random.fold_in(sub, i), s, dtype)) for i, s in enumerate(shapes)]  # fmt: skip


@pytest.mark.parametrize("leak", [0.0, (0.0, 0.5, 1.0, 0.2)], ids=["no_leak", "leak"])
def test_mask_and_output_match_the_paper_on_the_same_uniform_draws(leak, x64):
  w = graddrop(leak, seed=3)
  res = jax.jit(w.weigh)(tuple(jnp.asarray(v) for v in VECTORS), w.init(K, jnp.float64, ()), None)
  uniforms = _draws(3, [v.shape[1:] for v in VECTORS], jnp.float64)
  outputs, weights = paper_graddrop(VECTORS, uniforms, np.broadcast_to(leak, (K,)))
  for got, want in zip(res.direction, outputs):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(np.asarray(res.weights), weights, rtol=1e-12)
  # The key advances by one split per call.
  want_key = jax.random.split(jax.random.PRNGKey(3))[0]
  np.testing.assert_array_equal(np.asarray(res.state.key), np.asarray(want_key))


def test_every_coordinate_keeps_a_single_sign_and_agreeing_ones_keep_all():
  w = graddrop(seed=1)
  vectors = tuple(jnp.asarray(v, jnp.float32) for v in VECTORS)
  res = jax.jit(w.weigh)(vectors, w.init(K, jnp.float32, ()), None)
  for g, out in zip(VECTORS, res.direction):
    positive, negative = np.where(g > 0, g, 0).sum(0), np.where(g < 0, g, 0).sum(0)
    out = np.asarray(out, np.float64)
    one_sign = np.isclose(out, positive, rtol=1e-6) | np.isclose(out, negative, rtol=1e-6)
    assert np.all(one_sign), (out, positive, negative)
  agree = np.asarray(res.direction[0])[0, :3]  # P = 1, P = 0 and the zero column: nothing dropped
  np.testing.assert_allclose(agree, W[:, 0, :3].sum(0), rtol=1e-6)


def test_the_positive_entries_survive_with_probability_p():
  # One coordinate pattern repeated n times: the share of coordinates keeping the positive
  # entries estimates P = (1 + Σg / Σ|g|) / 2 (binomial standard error below 0.004).
  g = np.array([3.0, -1.0, 0.5, -0.5])  # P = 0.5 (1 + 2 / 5) = 0.7
  n = 20_000
  out, _ = jax.jit(graddrop_leaf)(
    jnp.asarray(np.repeat(g[:, None], n, 1), jnp.float32),
    jax.random.uniform(jax.random.PRNGKey(0), (n,)),
    jnp.zeros(K),
  )
  kept_positive = np.isclose(np.asarray(out), 3.5)
  assert np.all(kept_positive | np.isclose(np.asarray(out), -1.5))
  assert abs(kept_positive.mean() - 0.7) < 0.02


def test_a_purity_function_and_full_leak():
  v = (jnp.asarray(B, jnp.float32),)
  full_leak = graddrop(leak=1.0)
  ones = jax.jit(full_leak.weigh)(v, full_leak.init(K, jnp.float32, ()), None)
  np.testing.assert_allclose(np.asarray(ones.direction[0]), B.sum(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ones.weights), 1.0)
  always_positive = graddrop(purity_fn=lambda p: jnp.ones_like(p))  # f ≡ 1 > U: keep positives
  res = jax.jit(always_positive.weigh)(v, always_positive.init(K, jnp.float32, ()), None)
  np.testing.assert_allclose(np.asarray(res.direction[0]), np.where(B > 0, B, 0).sum(0), rtol=1e-5)


def test_bad_leaks_are_refused():
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    graddrop(leak=1.5)
  with pytest.raises(ValueError, match="leak has 2 values for K = 4"):
    graddrop(leak=(0.1, 0.2)).init(K, jnp.float32, ())
  with pytest.raises(ValueError, match="leak has 2 values for K = 4"):
    graddrop(leak=(0.1, 0.2)).weigh((jnp.ones((K, 2)),), None, None)
