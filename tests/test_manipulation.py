"""AdaTask equals K independent Adams; Clippy-Adam respects its bound, equals Adam far from it, composes with PUB."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax._manipulation import adatask, clip_factors, clippy_adam, scale_by_clippy_adam


def _grads(seed, steps, k=3):
  rng = np.random.default_rng(seed)
  shared = rng.standard_normal((steps, k, 4)) * 10.0 ** rng.uniform(-2, 2, size=(1, k, 1))
  head = rng.standard_normal((steps, k, k, 2))
  head *= np.eye(k)[None, :, :, None]  # task j's head gets only task j's gradient
  return {"shared": jnp.asarray(shared, jnp.float32), "head": jnp.asarray(head, jnp.float32)}


def test_adatask_equals_independent_adams_summed_on_shared_params():
  k, steps, lr = 3, 6, 0.01
  grads = _grads(0, steps, k)
  params = {"shared": jnp.ones(4), "head": jnp.ones((k, 2))}
  shared = {"shared": True, "head": False}
  tx = adatask(lr, num_tasks=k, shared=shared)
  state = tx.init(params)
  adams = [optax.adam(lr) for _ in range(k)]
  states = [a.init(params) for a in adams]
  step = jax.jit(tx.update)
  for t in range(steps):
    g_t = jax.tree.map(lambda x: x[t], grads)
    updates, state = step(g_t, state, params)
    expected = jax.tree.map(jnp.zeros_like, params)
    for i, (a, s) in enumerate(zip(adams, states)):
      u, states[i] = a.update(jax.tree.map(lambda x: x[i], g_t), s, params)
      expected = jax.tree.map(jnp.add, expected, u)
    for key in params:
      np.testing.assert_allclose(
        np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-5, atol=1e-8
      )


def test_clippy_update_respects_the_bound_and_is_adam_far_from_it():
  lr, rel, absolute = 0.1, 0.05, 1e-3
  tx = clippy_adam(lr, lambda_rel=rel, lambda_abs=absolute)
  adam = optax.adam(lr)
  rng = np.random.default_rng(0)
  params = {
    "small": jnp.asarray(rng.standard_normal(5) * 0.01, jnp.float32),
    "large": jnp.asarray(rng.standard_normal(5) * 100.0 + 500.0, jnp.float32),
  }
  s_clip, s_adam = tx.init(params), adam.init(params)
  step_clip, step_adam = jax.jit(tx.update), jax.jit(adam.update)
  for _ in range(5):
    g = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    u_clip, s_clip = step_clip(g, s_clip, params)
    u_adam, s_adam = step_adam(g, s_adam, params)
    bound = rel * np.abs(np.asarray(params["small"])) + absolute
    assert np.all(np.abs(np.asarray(u_clip["small"])) <= bound * (1 + 1e-5))
    assert np.max(np.abs(np.asarray(u_clip["small"])) / bound) == pytest.approx(
      1.0, rel=1e-5
    )  # binding
    # The clip is one factor per tensor: the direction is Adam's.
    ratio = np.asarray(u_clip["small"]) / np.asarray(u_adam["small"])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    # Far from the bound (|w| ~ 500): exactly Adam, and the moments are Adam's (unclipped).
    np.testing.assert_allclose(np.asarray(u_clip["large"]), np.asarray(u_adam["large"]), rtol=1e-6)
    params = jax.tree.map(jnp.add, params, u_clip)
  np.testing.assert_allclose(
    np.asarray(s_clip[0].mu["small"]), np.asarray(s_adam[0].mu["small"]), rtol=1e-6
  )


def test_clip_factors_and_schedule():
  u = {"a": jnp.array([1.0, -4.0]), "b": jnp.array([0.0, 0.0])}
  w = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([0.0, 0.0])}
  r = clip_factors(u, w, 1.0, lambda_rel=0.5, lambda_abs=0.0)
  assert float(r["a"]) == pytest.approx(0.25)  # |w|/2 = 1 allows a quarter of |u| = 4
  assert float(r["b"]) == 1.0  # nothing moves: no clipping
  tx = scale_by_clippy_adam(optax.constant_schedule(1.0), lambda_rel=0.5, lambda_abs=0.0)
  out, _ = tx.update(u, tx.init(w), w)
  np.testing.assert_allclose(np.asarray(out["a"]), [0.5, -0.5])  # Adam: sign(g); |w|/2 allows 0.5
  with pytest.raises(ValueError, match="params"):
    tx.update(u, tx.init(w))


def test_clippy_as_the_per_task_direction_of_pub():
  """pub(scale_by_clippy_adam(lr), lr): every per-task look-ahead and the joint step respect the bound."""
  lr, rel, absolute = 0.5, 0.01, 1e-4
  tx = pub_optax.pub(
    scale_by_clippy_adam(lr, lambda_rel=rel, lambda_abs=absolute), lr, num_tasks=2, scaling="convex"
  )
  params = jnp.asarray([1.0, -2.0, 3.0])
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(jnp.array([[1.0, 0.0, 2.0], [-3.0, 1.0, 0.0]]), state, params)
  bound = rel * np.abs(np.asarray(params)) + absolute
  assert np.all(np.isfinite(np.asarray(updates)))
  assert np.all(np.abs(np.asarray(updates)) <= bound * (1 + 1e-5))  # convex weights keep the bound
