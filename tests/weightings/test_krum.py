"""Krum: selection against a numpy reference on explicit vectors, outlier rejection, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from properties import batched

from pub_optax.weightings._krum import krum, krum_weights


def reference_krum(vectors: np.ndarray, f: int, m: int) -> np.ndarray:
  """Blanchard et al.'s rule on explicit vectors (test-only): 1/m on the m lowest scores."""
  k = len(vectors)
  dist = np.array([[np.sum((a - b) ** 2) for b in vectors] for a in vectors])
  scores = np.array([np.sum(np.sort(np.delete(dist[i], i))[: k - f - 2]) for i in range(k)])
  w = np.zeros(k)
  w[np.argsort(scores, kind="stable")[:m]] = 1.0 / m
  return w


@pytest.mark.parametrize("k,f,m", [(5, 1, 1), (7, 2, 3), (9, 1, 4), (3, 0, 1)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_selection_matches_numpy_reference(k, f, m, dtype):
  rng = np.random.default_rng(k * 10 + f)
  vectors = rng.standard_normal((40, k, 6)) * 10.0 ** rng.uniform(-3, 3, size=(40, 1, 1))
  grams = vectors @ vectors.transpose(0, 2, 1)
  with jax.enable_x64(dtype == jnp.float64):
    w = batched(lambda g: krum_weights(g, f, m))(jnp.asarray(grams, dtype))
    assert w.dtype == jnp.promote_types(dtype, jnp.float32)
  for j, wi in zip(vectors, np.asarray(w)):
    np.testing.assert_allclose(wi, reference_krum(j, f, m))


def test_byzantine_vectors_are_never_selected(x64):
  rng = np.random.default_rng(0)
  honest = 1.0 + 0.1 * rng.standard_normal((6, 4))
  byzantine = 100.0 * rng.standard_normal((2, 4))
  j = np.concatenate([honest, byzantine])
  w = np.asarray(krum_weights(jnp.asarray(j @ j.T), n_byzantine=2, n_selected=3))
  assert np.all(w[6:] == 0.0) and np.isclose(w.sum(), 1.0) and np.sum(w > 0) == 3


def test_scale_invariance_permutation_and_degenerate_inputs(x64):
  rng = np.random.default_rng(2)
  j = rng.standard_normal((6, 5))
  gram = j @ j.T
  w = np.asarray(krum_weights(jnp.asarray(gram), 1, 2))
  for s in (1e-10, 1e10):
    np.testing.assert_array_equal(np.asarray(krum_weights(jnp.asarray(gram * s), 1, 2)), w)
  perm = rng.permutation(6)
  w_perm = np.asarray(krum_weights(jnp.asarray(gram[perm][:, perm]), 1, 2))
  np.testing.assert_array_equal(w_perm, w[perm])
  # Ties select the lowest indices; a zero Gram is all ties.
  np.testing.assert_allclose(np.asarray(krum_weights(jnp.zeros((5, 5)), 1, 2)), [0.5, 0.5, 0, 0, 0])
  bad = jnp.asarray(gram).at[0, 1].set(jnp.nan)
  assert np.all(np.isnan(np.asarray(krum_weights(bad, 1))))


def test_validation_names_the_problem():
  with pytest.raises(ValueError, match="K > 2f \\+ 2"):
    krum_weights(jnp.eye(4), n_byzantine=1)
  with pytest.raises(ValueError, match="n_selected"):
    krum_weights(jnp.eye(4), n_byzantine=0, n_selected=5)
  with pytest.raises(ValueError, match="n_byzantine"):
    krum(-1)
  with pytest.raises(ValueError, match="n_selected"):
    krum(0, n_selected=0)
  with pytest.raises(ValueError, match="integers"):
    krum(1.5)
  w = krum(1)
  with pytest.raises(ValueError, match="K > 2f"):
    jax.jit(w.weigh)(jnp.eye(4), w.init(4, jnp.float32), None)
  res = jax.jit(w.weigh)(jnp.eye(5), w.init(5, jnp.float32), None)
  np.testing.assert_allclose(np.asarray(res.weights), [1.0, 0, 0, 0, 0])
