"""The contract every exported weighting keeps, one property per test, over the shared samplers.

Weightings are discovered: every function exported by ``pub_optax.weightings`` (and
``pub_optax.uncertainty``, ``pub_optax.famo``) that returns a :class:`Weighting` when
called without arguments. A new weighting gets every test by being exported; a
property that is the method's choice (sign, behaviour under ``G → cG``, randomness)
is read from the tables below, with the common case as default. Coordinate-kind rules
(stacked task vectors in, the direction out) have their own properties at the end.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import SCALES, standard_batch

import pub_optax
import pub_optax.weightings as weightings
from pub_optax.weightings import Weighting


def _discover() -> dict:
  found = {}
  candidates = [(n, getattr(weightings, n)) for n in weightings.__all__]
  candidates += [
    (n, getattr(pub_optax, n)) for n in ("uncertainty", "famo") if hasattr(pub_optax, n)
  ]
  for name, obj in candidates:
    if not inspect.isfunction(obj):
      continue
    try:
      made = obj()
    except TypeError:  # needs arguments: not a factory with defaults
      continue
    if isinstance(made, Weighting):
      found[name] = made
  return found


FOUND = _discover()
GRAM = sorted(n for n, w in FOUND.items() if w.kind == "gram")
LOSS = sorted(n for n, w in FOUND.items() if w.kind == "loss")

# The method's own choices; anything not listed gets the default.
NON_NEGATIVE = {"nash", "mgda", "upgrad", "cagrad", "pcgrad", "equal", "ones", "rlw", "modo", "pcd"}
RANDOM = {"pcgrad", "gradvac", "rlw"}  # weights depend on a random draw: no equivariance check
ASYMMETRIC = {"pcd"}  # the first task is the primary one: no equivariance check
# w(cG) = c^e w(G); default 0 (invariant). FairGrad: e = −α/(1+α), α = 1 by default.
SCALE_EXPONENT = {"nash": -0.5, "fairgrad": -0.5}
# Weightings with a constant in the units of G: no power law in c.
SCALE_DEPENDENT = {
  "modo": "takes a step of fixed size in the units of G",
  "pcd": "adds a fixed ε to the averaged squared norms",
}

K = 5
BATCH = standard_batch(K)
FULL = BATCH.full


def test_discovery_finds_the_weightings():
  assert {"nash", "mgda", "imtl_g", "upgrad", "cagrad", "aligned_mtl", "pcgrad"} <= set(GRAM)
  assert {"equal", "ones", "rlw", "uncertainty", "famo"} <= set(LOSS)


def _weigh(weighting, x, num_tasks):
  state = weighting.init(num_tasks, x.dtype)
  if weighting.kind == "gram":
    # Equal losses, for the Gram weightings that read them: permuting tasks keeps them.
    losses = jnp.ones((num_tasks,), x.dtype) if weighting.needs_losses else None
    res = weighting.weigh(x, state, losses)
  else:
    res = weighting.weigh(x if weighting.needs_losses else None, state)
  return res.weights, res.residual


@functools.cache
def _batched(name):
  weighting = FOUND[name]
  return jax.jit(
    jax.vmap(lambda x: _weigh(weighting, x, x.shape[-1] if x.ndim == 1 else x.shape[0]))
  )


def _run(name, xs, dtype=jnp.float32):
  with jax.enable_x64(dtype == jnp.float64):
    w, r = _batched(name)(jnp.asarray(xs, dtype))
    return w, r


def _losses(k: int, seed: int = 0) -> np.ndarray:
  """32 rows of K positive task losses over many scales, plus equal and tiny losses."""
  rng = np.random.default_rng(seed)
  losses = 10.0 ** rng.uniform(-3, 3, size=(32, k)) * 10.0 ** rng.uniform(-3, 3, size=(32, 1))
  losses[0] = 1.0
  losses[1] = 1e-12
  return losses


def _inputs(name, k=K):
  return BATCH.grams if FOUND[name].kind == "gram" else _losses(k)


ALL = GRAM + LOSS


@pytest.mark.parametrize("name", ALL)
def test_finite_weights_and_residual(name, fast_compiles):
  w, r = _run(name, _inputs(name))
  assert np.all(np.isfinite(np.asarray(w))), w
  assert np.all(np.isfinite(np.asarray(r))), r


@pytest.mark.parametrize("name", ALL)
def test_non_negative_where_promised(name, fast_compiles):
  if name not in NON_NEGATIVE:
    pytest.skip(f"{name} promises no sign")
  w, _ = _run(name, _inputs(name))
  assert np.all(np.asarray(w) >= 0), w


@pytest.mark.parametrize("name", ALL)
def test_permuting_tasks_permutes_weights(name, fast_compiles):
  if name in RANDOM:
    pytest.skip(f"{name} draws random weights")
  if name in ASYMMETRIC:
    pytest.skip(f"{name} treats the first task apart")
  xs = _inputs(name)
  perm = np.random.default_rng(1).permutation(K)
  permuted = xs[:, perm][:, :, perm] if xs.ndim == 3 else xs[:, perm]
  w = np.asarray(_run(name, xs, jnp.float64)[0])
  wp = np.asarray(_run(name, permuted, jnp.float64)[0])
  rows = FULL if xs.ndim == 3 else slice(None)  # unique solutions only
  np.testing.assert_allclose(wp[rows], w[rows][:, perm], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", GRAM)
def test_scaling_the_gram_matrix(name, fast_compiles):
  if name in SCALE_DEPENDENT:
    pytest.skip(f"{name} {SCALE_DEPENDENT[name]}")
  exponent = SCALE_EXPONENT.get(name, 0.0)
  w = np.asarray(_run(name, BATCH.grams, jnp.float64)[0])
  for group in BATCH.scaled:
    if not FULL[group[0]]:
      continue
    ref = w[group[SCALES.index(1.0)]]
    for i, c in zip(group, SCALES):
      np.testing.assert_allclose(w[i], ref * c**exponent, rtol=1e-6, err_msg=f"{name}, c={c}")


@pytest.mark.parametrize("name", GRAM)
def test_zero_matrix_gives_finite_weights(name, fast_compiles):
  w, r = _run(name, BATCH.grams)
  assert np.all(np.isfinite(np.asarray(w)[BATCH.zero]))
  assert np.all(np.isfinite(np.asarray(r)[BATCH.zero]))


@pytest.mark.parametrize("name", ALL)
def test_one_task(name, fast_compiles):
  xs = _inputs(name)[:, :1, :1] if FOUND[name].kind == "gram" else _losses(1)
  w, r = _run(name, xs)
  assert w.shape == (len(xs), 1)
  assert np.all(np.isfinite(np.asarray(w))) and np.all(np.isfinite(np.asarray(r)))


@pytest.mark.parametrize("name", ALL)
def test_jit_and_vmap_agree_with_one_eager_call(name, fast_compiles):
  xs = _inputs(name)
  w, _ = _run(name, xs)
  weighting = FOUND[name]
  for i in (2, 9):
    eager, _ = _weigh(weighting, jnp.asarray(xs[i], jnp.float32), K)
    # measured <= 1.3e-6 abs, 1.2e-5 rel (ConFIG: float32 Gram solve, error ~cond²·eps), every
    # other weighting <= 2.4e-7; a batching mistake is off by O(1)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(w[i]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_weights_come_in_the_input_dtype(name, dtype, fast_compiles):
  w, r = _run(name, _inputs(name), dtype)
  assert w.dtype == dtype, w.dtype
  assert r.dtype == dtype, r.dtype


@pytest.mark.parametrize("name", GRAM)
def test_non_finite_gram_gives_nan_weights_and_infinite_residual(name, fast_compiles):
  grams = BATCH.grams.copy()  # the batch's shape: the compiled call is reused
  grams[0, 0, 1] = grams[0, 1, 0] = np.inf
  grams[1, 2, 2] = np.nan
  grams[2, :, :] = -np.inf
  w, r = _run(name, grams)
  assert np.all(np.isnan(np.asarray(w)[:3])), w[:3]
  assert np.all(np.isposinf(np.asarray(r)[:3])), r[:3]
  assert np.all(np.isfinite(np.asarray(w)[3:]))


# ----------------------------------------------------------------------------- coordinate kind
# Rules that take the stacked task vectors (a tuple of shared leaves) and return the direction.

COORDINATE = sorted(n for n, w in FOUND.items() if w.kind == "coordinate")
_LEAVES = ((3, 2), (4,))


def _vectors(seed: int = 0) -> tuple:
  """K task vectors in two leaves, tasks of very different sizes."""
  rng = np.random.default_rng(seed)
  sizes = 10.0 ** rng.uniform(-3, 3, size=(K, 1))
  return tuple(rng.normal(size=(K, *s)) * sizes.reshape((K,) + (1,) * len(s)) for s in _LEAVES)


@functools.cache
def _combine(name, dtype_name):
  weighting, dtype = FOUND[name], jnp.dtype(dtype_name)
  shared = tuple(jax.ShapeDtypeStruct(s, dtype) for s in _LEAVES)
  return jax.jit(lambda vectors: weighting.weigh(vectors, weighting.init(K, dtype, shared), None))


def _combined(name, vectors, dtype=jnp.float32):
  with jax.enable_x64(dtype == jnp.float64):
    return _combine(name, jnp.dtype(dtype).name)(tuple(jnp.asarray(v, dtype) for v in vectors))


def test_discovery_finds_the_coordinate_rules():
  assert {"graddrop", "trimmed_mean"} <= set(COORDINATE)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", COORDINATE)
def test_coordinate_direction_is_finite_and_params_shaped_in_the_input_dtype(
  name, dtype, fast_compiles
):
  res = _combined(name, _vectors(), dtype)
  assert [d.shape for d in res.direction] == list(_LEAVES)
  assert all(d.dtype == dtype for d in res.direction) and res.weights.dtype == dtype
  assert res.weights.shape == (K,) and res.residual.dtype == dtype
  for x in (*res.direction, res.weights, res.residual):
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("name", COORDINATE)
def test_coordinate_permuting_tasks_permutes_weights_and_keeps_the_direction(name, fast_compiles):
  vectors = _vectors(1)
  perm = np.random.default_rng(1).permutation(K)
  res = _combined(name, vectors, jnp.float64)
  other = _combined(name, tuple(v[perm] for v in vectors), jnp.float64)
  for a, b in zip(res.direction, other.direction):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9 * np.abs(a).max())
  np.testing.assert_allclose(np.asarray(other.weights), np.asarray(res.weights)[perm], rtol=1e-9)


@pytest.mark.parametrize("name", COORDINATE)
def test_coordinate_non_finite_vectors_give_nan_and_keep_the_state(name, fast_compiles):
  weighting = FOUND[name]
  shared = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in _LEAVES)
  state = weighting.init(K, jnp.float32, shared)
  vectors = [jnp.asarray(v, jnp.float32) for v in _vectors()]
  vectors[1] = vectors[1].at[2, 0].set(jnp.nan)
  res = jax.jit(weighting.weigh)(tuple(vectors), state, None)
  assert all(np.all(np.isnan(np.asarray(d))) for d in res.direction)
  assert np.all(np.isnan(np.asarray(res.weights))) and np.isposinf(float(res.residual))
  for a, b in zip(jax.tree.leaves(res.state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
