"""value_and_task_grads: one forward pass, K gradients equal to the per-task jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pub_optax


def _losses(params, x):
  h = jnp.tanh(x @ params["w"])
  return jnp.stack([jnp.mean(h**2), jnp.mean(jnp.sin(h)), jnp.mean(h) * params["b"]])


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.array(0.7)}
X = jnp.arange(20.0).reshape(5, 4) / 10.0


def test_matches_per_task_grad():
  losses, grads = pub_optax.value_and_task_grads(_losses)(PARAMS, X)
  np.testing.assert_allclose(losses, _losses(PARAMS, X), rtol=1e-6)
  assert grads["w"].shape == (3, 4, 3) and grads["b"].shape == (3,)
  for k in range(3):
    ref = jax.grad(lambda p: _losses(p, X)[k])(PARAMS)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g[k], r, rtol=1e-5, atol=1e-7), grads, ref)


def test_forward_runs_once():
  calls = []

  def counted(params, x):
    calls.append(1)
    return _losses(params, x)

  pub_optax.value_and_task_grads(counted)(PARAMS, X)
  assert len(calls) == 1


def test_has_aux_and_argnums_tuple():
  def f(params, x):
    losses = _losses(params, x)
    return losses, {"mean": losses.mean()}

  (losses, aux), (gp, gx) = pub_optax.value_and_task_grads(f, argnums=(0, 1), has_aux=True)(
    PARAMS, X
  )
  assert float(aux["mean"]) == pytest.approx(float(losses.mean()))
  assert gx.shape == (3,) + X.shape
  ref = jax.jacrev(lambda x: _losses(PARAMS, x))(X)
  np.testing.assert_allclose(gx, ref, rtol=1e-5, atol=1e-7)


def test_jit_and_dtype():
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PARAMS)
  losses, grads = jax.jit(pub_optax.value_and_task_grads(_losses))(p16, X.astype(jnp.bfloat16))
  assert grads["w"].dtype == jnp.bfloat16


def test_errors():
  with pytest.raises(
    ValueError, match=r"vector of K task losses with shape \(K,\), got shape \(\)"
  ):
    pub_optax.value_and_task_grads(lambda p: jnp.sum(p))(jnp.ones(3))
  with pytest.raises(ValueError, match="zero task losses"):
    pub_optax.value_and_task_grads(lambda p: p[:0])(jnp.ones(3))
  with pytest.raises(ValueError, match="argnums=2"):
    pub_optax.value_and_task_grads(_losses, argnums=2)(PARAMS, X)


@pytest.mark.parametrize("strategy", ["auto", "vmap", "loop"])
def test_strategies_match_per_task_grad(strategy):
  fn = jax.jit(pub_optax.value_and_task_grads(_losses, strategy=strategy))
  losses, grads = fn(PARAMS, X)
  np.testing.assert_allclose(losses, _losses(PARAMS, X), rtol=1e-6)
  for k in range(3):
    ref = jax.grad(lambda p: _losses(p, X)[k])(PARAMS)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g[k], r, rtol=1e-6, atol=1e-6), grads, ref)


@pytest.mark.parametrize("strategy", ["auto", "vmap", "loop"])
def test_strategies_keep_has_aux_and_argnums(strategy):
  def f(params, x):
    losses = _losses(params, x)
    return losses, {"mean": losses.mean()}

  fn = pub_optax.value_and_task_grads(f, argnums=(0, 1), has_aux=True, strategy=strategy)
  (losses, aux), (gp, gx) = fn(PARAMS, X)  # eagerly, outside jit
  assert float(aux["mean"]) == pytest.approx(float(losses.mean()))
  np.testing.assert_allclose(gx, jax.jacrev(lambda x: _losses(PARAMS, x))(X), atol=1e-6)
  np.testing.assert_allclose(
    gp["b"], jax.jacrev(lambda b: _losses(dict(PARAMS, b=b), X))(PARAMS["b"]), atol=1e-6
  )


def test_unknown_strategy_is_named():
  with pytest.raises(ValueError, match="strategy must be 'auto', 'vmap' or 'loop', got 'scan'"):
    pub_optax.value_and_task_grads(_losses, strategy="scan")
