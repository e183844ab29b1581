"""ExcessMTL: LibMTL's weight update transcribed in numpy, its scale invariance, zero first gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings import excess_mtl

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 3
SHAPES = ((2, 3), (4,))
SHARED = tuple(jax.ShapeDtypeStruct(s, jnp.float64) for s in SHAPES)


def libmtl_excess_mtl(steps, robust_step_size, eps=1e-7):
  """LibMTL's ExcessMTL.backward on flattened task gradients, test-only."""
  weights, grad_sum, initial = np.ones(K), None, None
  out = []
  for g in steps:
    grad_sum = g**2 if grad_sum is None else grad_sum + g**2
    w = np.array([g[i] * (1 / np.sqrt(grad_sum[i] + eps)) @ g[i] for i in range(K)])
    if initial is None:
      initial = w
    else:
      weights = weights * np.exp(w / initial * robust_step_size)
      weights = weights / weights.sum() * K
    out.append((weights.copy(), weights @ g))
  return out


def _steps(seed, n, decay=(1.0, 0.6, 0.9)):
  """Task vectors whose sizes shrink at different rates, in two leaves."""
  rng = np.random.default_rng(seed)
  return [
    tuple(rng.normal(size=(K, *s)) * np.reshape(np.power(decay, t), (K,) + (1,) * len(s)) for s in SHAPES)
    for t in range(n)
  ]  # fmt: skip


def _flat(leaves):
  return np.concatenate([np.asarray(v).reshape(K, -1) for v in leaves], axis=1)


@functools.cache
def _weighing(step_size, eps=1e-7):
  weighting = excess_mtl(step_size, eps=eps)
  return weighting, jax.jit(weighting.weigh)


def _run(step_size, steps, eps=1e-7):
  weighting, weigh = _weighing(step_size, eps)
  state = weighting.init(K, jnp.float64, SHARED)
  results = []
  for leaves in steps:
    res = weigh(tuple(jnp.asarray(v) for v in leaves), state, None)
    state = res.state
    results.append(res)
  return results


@pytest.mark.parametrize("step_size", [1e-2, 1.0])
def test_weights_and_direction_follow_libmtl_over_several_steps(step_size, x64):
  steps = _steps(0, 5)
  ref = libmtl_excess_mtl([_flat(s) for s in steps], step_size)
  for res, (weights, direction) in zip(_run(step_size, steps), ref):
    np.testing.assert_allclose(np.asarray(res.weights), weights, rtol=1e-12)
    got = np.concatenate([np.asarray(d).ravel() for d in res.direction])
    np.testing.assert_allclose(got, direction, rtol=1e-11)
  # The slowest-shrinking task (the first) ends with the largest weight.
  assert int(np.argmax(ref[-1][0])) == 0


def test_scaling_one_task_by_a_constant_leaves_the_weights(x64):
  steps = _steps(1, 4)
  scaled = [tuple(v * np.reshape([1e3, 1.0, 1e-3], (K,) + (1,) * (v.ndim - 1)) for v in s) for s in steps]  # fmt: skip
  for a, b in zip(_run(1.0, steps, eps=0.0), _run(1.0, scaled, eps=0.0)):
    np.testing.assert_allclose(np.asarray(b.weights), np.asarray(a.weights), rtol=1e-10)


def test_a_task_whose_first_gradient_is_zero_takes_its_baseline_later(x64):
  steps = _steps(2, 3)
  steps[0] = tuple(v * np.reshape([1.0, 0.0, 1.0], (K,) + (1,) * (v.ndim - 1)) for v in steps[0])
  results = _run(1.0, steps)
  assert all(np.all(np.isfinite(np.asarray(r.weights))) for r in results)
  state = results[1].state  # task 1's baseline is its second-step estimate, its ratio 0 there
  g = _flat(steps[1])[1]
  np.testing.assert_allclose(
    float(state.baseline[1]), np.sum(g**2 / np.sqrt(g**2 + 1e-7)), rtol=1e-12
  )


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="robust_step_size must be positive"):
    excess_mtl(0.0)
  with pytest.raises(ValueError, match="eps must be non-negative"):
    excess_mtl(eps=-1.0)
