"""pub_optax inside the training loops optax and Flax users already write.

Masks in every form (optax prefix masks, a bool, NNX-wrapped), ``nnx.Optimizer`` with a ranking
model's own mask, Linen's ``TrainState``, per-task preprocessing, gradient accumulation, the
balance state inside wrapped states, and gradients without a task axis refused.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import pub_optax

pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 2


def _params():
  return {
    "encoder": {"w": jnp.array([[0.5, -0.2], [0.1, 0.3]]), "b": jnp.array([0.1, -0.1])},
    "heads": [jnp.array([1.0, 0.5]), jnp.array([-0.5, 1.0])],
  }


def _losses(params, x=jnp.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])):
  h = jnp.tanh(x @ params["encoder"]["w"] + params["encoder"]["b"])
  targets = (jnp.array([1.0, 0.0, -1.0]), jnp.array([0.5, 0.5, 2.0]))
  return jnp.stack([jnp.mean((h @ w - t) ** 2) for w, t in zip(params["heads"], targets)])


def _grads(params):
  return pub_optax.value_and_task_grads(_losses)(params)[1]


def _run(tx, steps=3):
  params = _params()
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(_grads(params), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _assert_trees_close(a, b, rtol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), a, b)


# ---------------------------------------------------------------- masks


def test_prefix_mask_equals_the_full_mask():
  full = {"encoder": {"w": True, "b": True}, "heads": [False, False]}
  prefix = {"encoder": True, "heads": False}
  a, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared=full))
  b, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared=prefix))
  _assert_trees_close(a, b, rtol=0)


def test_a_single_bool_is_a_mask():
  a, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared=True))
  b, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared=None))
  _assert_trees_close(a, b, rtol=0)


def test_nnx_wrapped_mask_matches_pure_params():
  wrapped = {"encoder": nnx.Param(True), "heads": [nnx.Param(False), nnx.Param(False)]}
  a, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared=wrapped))
  b, _ = _run(pub_optax.pub_adam(0.05, num_tasks=K, shared={"encoder": True, "heads": False}))
  _assert_trees_close(a, b, rtol=0)


def test_mask_errors_name_the_path():
  with pytest.raises(ValueError, match=r"does not cover the parameter at \['heads'\]"):
    _run(pub_optax.pub_adam(0.05, num_tasks=K, shared={"encoder": True}))
  with pytest.raises(ValueError, match=r"match no parameter: \['decoder'\]"):
    _run(pub_optax.pub_adam(0.05, num_tasks=K, shared={"encoder": True, "heads": False, "decoder": True}))  # fmt: skip


# ---------------------------------------------------------------- Flax


class _TwoTaskNet(nnx.Module):
  def __init__(self, rngs):
    self.encoder = nnx.Linear(2, 4, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(4, 1, rngs=rngs) for _ in range(K)])

  def __call__(self, x):
    h = jnp.tanh(self.encoder(x))
    return jnp.concatenate([head(h) for head in self.heads], axis=1)

  def shared_mask(self):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: path[0].key == "encoder", nnx.state(self, nnx.Param)
    )


def _nnx_losses(model, x, y):
  return jnp.mean((model(x) - y) ** 2, axis=0)


def test_nnx_optimizer_with_the_models_own_mask_trains():
  model = _TwoTaskNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, pub_optax.pub_adam(1e-2, num_tasks=K, shared=model.shared_mask()), wrt=nnx.Param
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
  y = jnp.stack([x[:, 0] - x[:, 1], x[:, 0] * x[:, 1]], axis=1)

  @nnx.jit
  def step(model, optimizer, x, y):
    graphdef, params = nnx.split(model, nnx.Param)
    losses_fn = lambda p: _nnx_losses(nnx.merge(graphdef, p), x, y)
    losses, task_grads = pub_optax.value_and_task_grads(losses_fn)(params)
    optimizer.update(model, task_grads)
    return losses

  first = step(model, optimizer, x, y)
  for _ in range(100):
    last = step(model, optimizer, x, y)
  assert float(jnp.sum(last)) < 0.5 * float(jnp.sum(first))
  weights = pub_optax.balance_state(optimizer.opt_state).weights
  assert isinstance(weights, jax.Array) and weights.shape == (K,)


def test_ranking_models_mask_works_with_nnx_optimizer():
  from pub_optax.ranking.models import MMoE

  model = MMoE((5, 7), 2, K, embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,), rngs=nnx.Rngs(0))  # fmt: skip
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared=model.shared_mask())
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  params = nnx.state(model, nnx.Param)
  task_grads = jax.tree.map(lambda p: jnp.ones((K, *p.shape), p.dtype), params)  # Param-wrapped
  before = jax.tree.map(jnp.copy, nnx.as_pure(params))
  optimizer.update(model, task_grads)
  after = nnx.as_pure(nnx.state(model, nnx.Param))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after))
  assert all(moved)


def test_linen_train_state_applies_task_gradients():
  params = _params()
  state = train_state.TrainState.create(
    apply_fn=None, params=params, tx=pub_optax.pub_adam(0.05, num_tasks=K)
  )
  first = _losses(state.params)
  for _ in range(50):
    state = state.apply_gradients(grads=_grads(state.params))
  assert float(jnp.sum(_losses(state.params))) < float(jnp.sum(first))
  assert pub_optax.balance_state(state.opt_state).weights.shape == (K,)


# ---------------------------------------------------------------- per-task preprocessing


def test_per_task_clips_each_tasks_gradient_on_its_own():
  clip = pub_optax.per_task(optax.clip_by_global_norm(0.1))
  grads = _grads(_params())
  clipped, _ = clip.update(grads, clip.init(_params()))
  for k in range(K):
    task = jax.tree.map(lambda g: g[k], grads)
    want, _ = optax.clip_by_global_norm(0.1).update(task, optax.EmptyState())
    _assert_trees_close(jax.tree.map(lambda g: g[k], clipped), want)


def test_per_task_chains_before_balancing():
  chained = optax.chain(
    pub_optax.per_task(optax.clip_by_global_norm(0.1)), pub_optax.pub_adam(0.05, num_tasks=K)
  )
  a, state = _run(chained)
  clip = pub_optax.per_task(optax.clip_by_global_norm(0.1))
  tx = pub_optax.pub_adam(0.05, num_tasks=K)
  params = _params()
  s = tx.init(params)
  for _ in range(3):
    g, _ = clip.update(_grads(params), clip.init(params))
    u, s = tx.update(g, s, params)
    params = optax.apply_updates(params, u)
  _assert_trees_close(a, params)
  assert pub_optax.balance_state(state) is not None


def test_per_task_with_state_needs_num_tasks():
  params = _params()
  stateful = pub_optax.per_task(optax.scale_by_adam())
  with pytest.raises(ValueError, match="pass num_tasks=K"):
    stateful.update(_grads(params), stateful.init(params), params)
  per_task_adam = pub_optax.per_task(optax.scale_by_adam(), num_tasks=K)
  state = per_task_adam.init(params)
  out, state = per_task_adam.update(_grads(params), state, params)
  assert jax.tree.leaves(state)[1].shape[0] == K


# ---------------------------------------------------------------- accumulation


def test_multi_steps_balances_the_mean_of_the_micro_batches():
  params = _params()
  micro = [jax.tree.map(lambda g, s=s: g * s, _grads(params)) for s in (0.5, 1.5, 1.0)]
  acc = pub_optax.multi_steps(pub_optax.pub_adam(0.05, num_tasks=K), 3, num_tasks=K)
  state = acc.init(params)
  for i, g in enumerate(micro):
    updates, state = acc.update(g, state, params)
    if i < 2:
      assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
  plain = pub_optax.pub_adam(0.05, num_tasks=K)
  mean = jax.tree.map(lambda *gs: sum(gs) / 3, *micro)
  want, _ = plain.update(mean, plain.init(params), params)
  _assert_trees_close(updates, want, rtol=1e-5)
  assert int(state.mini_step) == 0


def test_optax_multi_steps_error_names_the_task_aware_wrapper():
  params = _params()
  tx = optax.MultiSteps(pub_optax.pub_adam(0.05, num_tasks=K), 2)
  with pytest.raises(ValueError, match="pub_optax.multi_steps"):
    tx.update(_grads(params), tx.init(params), params)


# ---------------------------------------------------------------- state and checks


def test_balance_state_is_found_in_wrapped_states():
  params = _params()
  wrapped = [
    pub_optax.pub_adam(0.05, num_tasks=K),
    optax.chain(pub_optax.pub_adam(0.05, num_tasks=K), optax.clip(1.0)),
    optax.inject_hyperparams(pub_optax.pub_adam)(learning_rate=0.05, num_tasks=K),
    pub_optax.apply_if_finite(pub_optax.pub_adam(0.05, num_tasks=K), 3),
    pub_optax.multi_steps(pub_optax.pub_adam(0.05, num_tasks=K), 2, num_tasks=K),
  ]
  for tx in wrapped:
    found = pub_optax.balance_state(tx.init(params))
    assert isinstance(found, pub_optax.BalanceState), tx
  assert pub_optax.balance_state(optax.adam(1e-3).init(params)) is None


def test_unstacked_gradients_that_happen_to_lead_with_k_are_refused_without_params():
  params = {"w": jnp.zeros((K, 3)), "b": jnp.zeros((K,))}  # every leaf leads with K
  tx = pub_optax.pub_adam(0.05, num_tasks=K)
  state = tx.init(params)
  unstacked = {"w": jnp.ones((K, 3)), "b": jnp.ones((K,))}
  with pytest.raises(ValueError, match="need a leading task axis"):
    tx.update(unstacked, state)
  with pytest.raises(ValueError, match="need a leading task axis"):
    tx.update(unstacked, state, params)


def test_bf16_state_keeps_its_dtypes_so_apply_if_finite_wraps_it():
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), _params())
  tx = pub_optax.apply_if_finite(pub_optax.pub_adam(0.05, num_tasks=K), 3)
  state = tx.init(params)
  grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), _grads(_params()))
  updates, new_state = jax.jit(tx.update)(grads, state, params)
  assert [x.dtype for x in jax.tree.leaves(new_state)] == [x.dtype for x in jax.tree.leaves(state)]
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))


def test_apply_if_finite_rejects_a_step_whose_gram_matrix_overflows():
  params = {"w": jnp.zeros(3, jnp.float32)}
  tx = pub_optax.apply_if_finite(pub_optax.pub_adam(0.05, num_tasks=K), 3)
  state = tx.init(params)
  _, state = tx.update({"w": jnp.ones((K, 3))}, state, params)
  huge = {"w": jnp.full((K, 3), 1e30, jnp.float32)}  # finite, but |g|^2 overflows float32
  updates, new_state = tx.update(huge, state, params)
  assert float(jnp.max(jnp.abs(updates["w"]))) == 0.0
  assert int(new_state.total_notfinite) == 1
  jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
