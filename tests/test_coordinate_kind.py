"""Coordinate-kind weightings in ``scale_by_balance``: the rule's direction at both levels.

A test-only rule (the coordinate-wise maximum over tasks, with a call counter as state) is
checked against the same step written out with optax: at gradient level the combined gradient
feeds Adam on shared leaves; at update level the combined look-ahead moves the shared leaves
while Adam's state advances with the rule applied to the gradients; with per-task states the
combined look-aheads. Plus the options and inputs such a rule refuses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.weightings import CoordinateResult, coordinatewise

K = 3
SHARED = {"w": True, "h": False}
PARAMS = {"w": jnp.array([0.5, -1.0, 2.0, 0.0]), "h": jnp.array([1.0, -1.0])}
_RNG = np.random.default_rng(0)
GRADS = [
  {"w": jnp.asarray(_RNG.normal(size=(K, 4)), jnp.float32), "h": jnp.asarray(_RNG.normal(size=(K, 2)), jnp.float32)}
  for _ in range(3)
]  # fmt: skip


def _max_rule(vectors, count, task_losses=None):
  out = tuple(jnp.max(v, axis=0) for v in vectors)
  return CoordinateResult(out, jnp.full((vectors[0].shape[0],), 0.5), count + 1, jnp.zeros(()))


MAXIMUM = coordinatewise("maximum", lambda k, dtype, shared: jnp.zeros((), jnp.int32), _max_rule)


@functools.cache
def _tx(level, per_task_state=False):
  return pub_optax.scale_by_balance(
    optax.scale_by_adam(), MAXIMUM, num_tasks=K, level=level, shared=SHARED,
    per_task_state=per_task_state,
  )  # fmt: skip


def _run(level, per_task_state=False):
  tx = _tx(level, per_task_state)
  state = tx.init(PARAMS)
  update = jax.jit(tx.update)
  outs = []
  for g in GRADS:
    u, state = update(g, state, PARAMS)
    outs.append(u)
  return outs, state


def _close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _combined(g):
  return {"w": jnp.max(g["w"], 0), "h": jnp.sum(g["h"], 0)}


def test_gradient_level_feeds_the_combined_gradient_to_the_inner_optimizer():
  outs, state = _run("gradient")
  adam = optax.scale_by_adam()
  s = adam.init(PARAMS)
  for g, u in zip(GRADS, outs):
    want, s = adam.update(_combined(g), s)
    _close(u, want)
  assert int(pub_optax.balance_state(state).weighting) == len(GRADS)  # one call per step
  np.testing.assert_allclose(pub_optax.balance_state(state).weights, 0.5)


def test_update_level_moves_by_the_combined_lookaheads_and_commits_the_combined_gradient():
  outs, state = _run("update")
  adam = optax.scale_by_adam()
  s = adam.init(PARAMS)
  for g, u in zip(GRADS, outs):
    lookaheads = jax.vmap(lambda gk: adam.update(gk, s)[0])(g)
    committed, s = adam.update(_combined(g), s)
    _close(u, {"w": jnp.max(lookaheads["w"], 0), "h": committed["h"]})
  _close(pub_optax.balance_state(state).inner, s)
  # The rule ran twice per step (look-aheads, gradients); its state advanced once.
  assert int(pub_optax.balance_state(state).weighting) == len(GRADS)


def test_per_task_states_combine_the_real_per_task_updates():
  outs, _ = _run("update", per_task_state=True)
  adam = optax.scale_by_adam()
  states = [adam.init(PARAMS) for _ in range(K)]
  for g, u in zip(GRADS, outs):
    steps = []
    for k in range(K):
      d, states[k] = adam.update(jax.tree.map(lambda x: x[k], g), states[k])
      steps.append(d)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *steps)
    _close(u, {"w": jnp.max(stacked["w"], 0), "h": jnp.sum(stacked["h"], 0)})


def test_cosines_are_those_of_the_combined_task_vectors():
  _, state = _run("gradient")
  w = np.asarray(GRADS[-1]["w"], np.float64)
  unit = w / np.linalg.norm(w, axis=1, keepdims=True)
  cosines = pub_optax.balance_state(state).diagnostics.cosines
  np.testing.assert_allclose(np.asarray(cosines), unit @ unit.T, rtol=1e-5, atol=1e-6)


def test_the_rule_state_init_sees_the_shared_leaves():
  seen = []

  def init(k, dtype, shared):
    seen.append((k, [(s.shape, s.dtype) for s in shared]))
    return jnp.zeros((), jnp.int32)

  params = {"a": jnp.zeros((2, 3), jnp.bfloat16), "b": jnp.zeros(5), "h": jnp.zeros(1)}
  w = coordinatewise("maximum", init, _max_rule)
  pub_optax.scale_by_balance(
    optax.sgd(1.0), w, num_tasks=4, level="gradient", shared={"a": True, "b": True, "h": False}
  ).init(params)
  assert seen == [(4, [((2, 3), jnp.bfloat16), ((5,), jnp.float32)])]


def test_non_finite_vectors_give_a_nan_direction_and_keep_the_state():
  g = dict(GRADS[0], w=GRADS[0]["w"].at[1, 2].set(jnp.inf))
  res = MAXIMUM.weigh((g["w"],), jnp.array(7, jnp.int32), None)
  assert np.all(np.isnan(np.asarray(res.direction[0]))) and np.all(np.isnan(res.weights))
  assert np.isposinf(float(res.residual)) and int(res.state) == 7


@pytest.mark.parametrize(
  "option, match",
  [
    ({"refresh_every": 2}, "refresh_every must be 1"),
    ({"scaling": "convex"}, "scaling must be 'raw'"),
    ({"lookahead": "fresh"}, "lookahead must be 'full'"),
    ({"commit": "convex"}, "commit must be 'scaled'"),
  ],
)
def test_options_a_coordinate_rule_cannot_honour_are_refused(option, match):
  with pytest.raises(ValueError, match=match):
    pub_optax.balance(optax.scale_by_adam(), MAXIMUM, 0.1, num_tasks=K, level="update", **option)


def test_row_sparse_table_gradients_are_refused():
  tx = _tx("gradient")
  params = {"w": jnp.zeros((6, 2)), "h": jnp.zeros(2)}
  lookup = pub_optax.lookup_rows(jnp.array([0, 2]), 6, size=2)
  grads = {"w": lookup.task_grads(jnp.ones((K, 2, 2))), "h": jnp.ones((K, 2))}
  with pytest.raises(ValueError, match="row-sparse"):
    jax.eval_shape(lambda s: tx.update(grads, s, params), tx.init(params))
