"""The PUB transformation: reductions to the inner optimizer, the step it takes, optax interplay, errors."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax

K = 3


def _params():
  return {"shared": jnp.linspace(-1.0, 2.0, 16), "head": jnp.array([[1.0, -0.5], [0.3, 0.2]])}


def _task_grads(seed, params=None, k=K):
  params = _params() if params is None else params
  keys = jax.random.split(jax.random.PRNGKey(seed), 2)
  return {
    "shared": jax.random.normal(keys[0], (k,) + params["shared"].shape),
    "head": jax.random.normal(keys[1], (k,) + params["head"].shape),
  }


SHARED_MASK = {"shared": True, "head": False}


def _run(tx, grads_seq, params):
  state = tx.init(params)
  out = []
  for g in grads_seq:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


def test_single_task_with_convex_scaling_is_the_inner_optimizer():
  params = _params()
  grads = [_task_grads(s, k=1) for s in range(5)]
  got, _ = _run(pub_optax.pub_adam(1e-2, num_tasks=1, scaling="convex"), grads, params)
  want, _ = _run(optax.adam(1e-2), [jax.tree.map(lambda g: g[0], g) for g in grads], params)
  for a, b in zip(got, want):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def test_identical_task_gradients_with_convex_scaling_are_the_inner_optimizer():
  params = _params()
  grads = [jax.tree.map(lambda g: jnp.repeat(g[:1], K, axis=0), _task_grads(s)) for s in range(5)]
  got, _ = _run(
    pub_optax.pub_adam(1e-2, num_tasks=K, scaling="convex", shared=SHARED_MASK), grads, params
  )
  # Shared leaves: Adam on the common gradient; task-specific: Adam on the sum (K g).
  want, _ = _run(optax.adam(1e-2), [jax.tree.map(lambda g: g[0], g) for g in grads], params)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a["shared"], b["shared"], rtol=1e-5, atol=1e-7)


def test_raw_scaling_joint_step_has_norm_sqrt_k_times_lr():
  params = {"w": jnp.zeros(12)}
  lr = 0.01
  tx = pub_optax.pub_adam(lr, num_tasks=K, scaling="raw")
  state = tx.init(params)
  for seed in range(4):
    g = {"w": jax.random.normal(jax.random.PRNGKey(seed), (K, 12))}
    updates, state = tx.update(g, state, params)
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(np.sqrt(K) * lr, rel=1e-4)
    assert float(pub_optax.balance_state(state).residual) < 1e-4  # measured <= 1.5e-6


def test_rms_scaling_gives_unit_rms_per_shared_coordinate():
  params = {"w": jnp.zeros(50)}
  lr = 0.01
  tx = pub_optax.pub_adam(lr, num_tasks=K, scaling="rms")
  updates, state = tx.update(
    {"w": jax.random.normal(jax.random.PRNGKey(0), (K, 50))}, tx.init(params), params
  )
  rms = float(jnp.sqrt(jnp.mean(updates["w"] ** 2)))
  assert rms == pytest.approx(lr, rel=1e-4)
  np.testing.assert_allclose(
    pub_optax.balance_state(state).weights,
    np.asarray(pub_optax.balance_state(state).weighting) * np.sqrt(50 / K),
    rtol=1e-6,
  )


def test_update_is_the_nash_weighted_sum_of_vmapped_adam_lookaheads():
  """An independent, loop-based re-implementation of one PUB step (rms scaling)."""
  params = _params()
  lr = 0.05
  inner = optax.scale_by_adam()
  tx = pub_optax.pub(inner, lr, num_tasks=K, shared=SHARED_MASK, scaling="rms")
  state = tx.init(params)
  ref_state = inner.init(params)
  for seed in range(3):
    g = _task_grads(seed)
    updates, state = tx.update(g, state, params)
    d = [inner.update(jax.tree.map(lambda x: x[k], g), ref_state, params)[0] for k in range(K)]
    flat = np.stack([np.asarray(di["shared"]) for di in d])
    alpha = np.asarray(nash_weights_np(flat @ flat.T))
    alpha_hat = alpha * np.sqrt(flat.shape[1] / K)
    # A well-posed Nash problem, solved: measured <= 1.2e-6 (float32 rounding); the bound is
    # still 28x below the solver's own exactness bar 8·sqrt(eps) = 2.8e-3.
    assert float(pub_optax.balance_state(state).residual) < 1e-4
    np.testing.assert_allclose(updates["shared"], -lr * alpha_hat @ flat, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(pub_optax.balance_state(state).weights, alpha_hat, rtol=2e-4)
    summed = jax.tree.map(lambda x: jnp.sum(x, 0), g)
    weighted = {
      "shared": jnp.tensordot(jnp.asarray(alpha_hat, jnp.float32), g["shared"], 1),
      "head": summed["head"],
    }
    head_step, ref_state = inner.update(weighted, ref_state, params)
    np.testing.assert_allclose(updates["head"], -lr * head_step["head"], rtol=1e-5, atol=1e-7)
    params = optax.apply_updates(params, updates)


def nash_weights_np(g):
  """Nash weights by a plain fixed-point-free method: scipy minimisation of the potential."""
  from scipy.optimize import minimize

  k = g.shape[0]
  obj = lambda a: 0.5 * a @ g @ a - np.sum(np.log(a))
  jac = lambda a: g @ a - 1.0 / a
  res = minimize(
    obj,
    np.ones(k) / np.sqrt(np.trace(g)),
    jac=jac,
    method="L-BFGS-B",
    bounds=[(1e-12, None)] * k,
    options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
  )
  return res.x


def test_task_specific_leaves_get_adam_of_the_task_sum():
  params = _params()
  grads = [_task_grads(s) for s in range(6)]
  got, _ = _run(pub_optax.pub_adam(1e-2, num_tasks=K, shared=SHARED_MASK), grads, params)
  # The head leaf sees Adam of the summed gradient; its moments advance with that sum.
  head = params["head"]
  opt = optax.adam(1e-2)
  st = opt.init(head)
  for g, p in zip(grads, got):
    u, st = opt.update(jnp.sum(g["head"], 0), st, head)
    head = head + u
    np.testing.assert_allclose(p["head"], head, rtol=1e-6)


def test_callable_shared_mask_matches_pytree_mask():
  params = _params()
  grads = [_task_grads(s) for s in range(3)]
  a, _ = _run(pub_optax.pub_adam(1e-2, num_tasks=K, shared=SHARED_MASK), grads, params)
  b, _ = _run(
    pub_optax.pub_adam(1e-2, num_tasks=K, shared=lambda p: {"shared": True, "head": False}),
    grads,
    params,
  )
  jax.tree.map(np.testing.assert_array_equal, a[-1], b[-1])


def test_refresh_every_reuses_the_weights():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, refresh_every=3)
  state = tx.init(params)
  weights = []
  for s in range(7):
    _, state = tx.update(_task_grads(s), state, params)
    weights.append(np.asarray(pub_optax.balance_state(state).weights))
  np.testing.assert_array_equal(weights[0], weights[1])
  np.testing.assert_array_equal(weights[0], weights[2])
  assert not np.allclose(weights[2], weights[3])
  np.testing.assert_array_equal(weights[3], weights[5])
  assert not np.allclose(weights[5], weights[6])


def test_weight_decay_is_applied_once_per_step():
  params = _params()
  g = _task_grads(0)
  lr, wd = 0.1, 0.01
  plain, _ = pub_optax.pub_adam(lr, num_tasks=K).update(
    g, pub_optax.pub_adam(lr, num_tasks=K).init(params), params
  )
  tx = pub_optax.pub_adam(lr, num_tasks=K, weight_decay=wd)
  decayed, _ = tx.update(g, tx.init(params), params)
  jax.tree.map(
    # measured <= 1.0e-8 (one float32 ulp of the 0.1-sized updates); decay missing or doubled
    # is off by lr·wd·|p| = 1e-3·|p|, caught at every |p| > 2e-4
    lambda a, b, p: np.testing.assert_allclose(a - b, -lr * wd * p, rtol=1e-5, atol=2e-7),
    decayed,
    plain,
    params,
  )


def test_per_task_state_balances_independent_adam_updates():
  params = _params()
  lr = 0.05
  tx = pub_optax.pub(
    optax.scale_by_adam(), lr, num_tasks=K, per_task_state=True, scaling="raw", shared=SHARED_MASK
  )
  state = tx.init(params)
  assert pub_optax.balance_state(state).inner.mu["shared"].shape == (K, 16)
  refs = [optax.scale_by_adam() for _ in range(K)]
  ref_states = [r.init(params) for r in refs]
  for s in range(3):
    g = _task_grads(s)
    updates, state = tx.update(g, state, params)
    d = []
    for k in range(K):
      dk, ref_states[k] = refs[k].update(jax.tree.map(lambda x: x[k], g), ref_states[k], params)
      d.append(dk)
    w = np.asarray(pub_optax.balance_state(state).weights)
    # measured <= 1.6e-6 (float32 rounding of a 3-term sum whose terms partly cancel); one
    # Adam state shared by the tasks is off by 3.6 from the second step on
    np.testing.assert_allclose(
      updates["shared"], -lr * sum(w[k] * d[k]["shared"] for k in range(K)), rtol=1e-4
    )
    np.testing.assert_allclose(
      updates["head"], -lr * sum(d[k]["head"] for k in range(K)), rtol=1e-5
    )


def test_gradient_level_with_convex_equal_weights_is_adam_on_the_mean():
  params = _params()
  equal = pub_optax.weightings.stateless(
    "equal", lambda g: jnp.full(g.shape[0], 1.0 / g.shape[0], g.dtype)
  )
  tx = pub_optax.balance(
    optax.scale_by_adam(), equal, 1e-2, num_tasks=K, level="gradient", shared=SHARED_MASK
  )
  grads = [_task_grads(s) for s in range(4)]
  got, _ = _run(tx, grads, params)
  want, _ = _run(
    optax.adam(1e-2),
    [{"shared": g["shared"].mean(0), "head": g["head"].sum(0)} for g in grads],
    params,
  )
  np.testing.assert_allclose(got[-1]["shared"], want[-1]["shared"], rtol=1e-5)


# ---------------------------------------------------------------- optax interplay


def test_no_recompilation_on_second_jitted_call():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared=SHARED_MASK, refresh_every=2)
  traces = []

  @jax.jit
  def step(params, state, g):
    traces.append(1)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  state = tx.init(params)
  for s in range(3):
    params, state = step(params, state, _task_grads(s))
  assert len(traces) == 1


def test_runs_inside_lax_scan_and_converges():
  def losses(w):
    return jnp.stack([jnp.sum((w - 1.0) ** 2), jnp.sum((w + 1.0) ** 2), jnp.sum(w**2)])

  tx = pub_optax.pub_adam(optax.linear_schedule(0.1, 0.0, 400), num_tasks=3)
  grad_fn = pub_optax.value_and_task_grads(losses)

  def step(carry, _):
    w, state = carry
    _, g = grad_fn(w)
    u, state = tx.update(g, state, w)
    return (w + u, state), None

  w0 = jnp.array([3.0, -2.0, 0.5])
  (w, state), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=400))((w0, tx.init(w0)))
  # The Pareto set is the diagonal segment c·(1, 1, 1), |c| <= 1; PUB stops near its centre.
  # Measured: ptp 1.7e-3 and |c| 0.057 after 400 steps, from ptp 5 and max 3 at the start;
  # the bounds are 10x those, and 0.6 still rejects an end of the segment (|c| = 1).
  assert float(jnp.ptp(w)) < 0.02 and float(jnp.max(jnp.abs(w))) < 0.6, w
  assert bool(jnp.all(jnp.isfinite(pub_optax.balance_state(state).weights)))


def test_state_survives_serialization_and_training_resumes_identically():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, refresh_every=2, shared=SHARED_MASK)
  state = tx.init(params)
  for s in range(3):
    u, state = tx.update(_task_grads(s), state, params)
    params = optax.apply_updates(params, u)
  blob = flax.serialization.to_bytes((params, state))
  restored_params, restored_state = flax.serialization.from_bytes((params, tx.init(params)), blob)
  for s in range(3, 6):
    u1, state = tx.update(_task_grads(s), state, params)
    u2, restored_state = tx.update(_task_grads(s), restored_state, restored_params)
    params = optax.apply_updates(params, u1)
    restored_params = optax.apply_updates(restored_params, u2)
  jax.tree.map(np.testing.assert_array_equal, params, restored_params)
  jax.tree.map(np.testing.assert_array_equal, state, restored_state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_params_dtype_is_preserved(dtype):
  params = jax.tree.map(lambda p: p.astype(dtype), _params())
  g = jax.tree.map(lambda x: x.astype(dtype), _task_grads(0))
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared=SHARED_MASK)
  updates, state = jax.jit(tx.update)(g, tx.init(params), params)
  assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
  assert (
    pub_optax.balance_state(state).weights.dtype == jnp.float32
  )  # weights are solved in float32 for bf16 params
  assert bool(jnp.all(jnp.isfinite(pub_optax.balance_state(state).weights)))


def test_inject_hyperparams_learning_rate():
  params = _params()
  g = _task_grads(0)
  tx = optax.inject_hyperparams(pub_optax.pub_adam)(
    learning_rate=1e-2, num_tasks=K, shared=SHARED_MASK
  )
  state = tx.init(params)
  u1, _ = jax.jit(tx.update)(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(2e-2)
  u2, _ = jax.jit(tx.update)(g, state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 2 * a, rtol=1e-6), u1, u2)
  plain, _ = pub_optax.pub_adam(1e-2, num_tasks=K, shared=SHARED_MASK).update(
    g, pub_optax.pub_adam(1e-2, num_tasks=K).init(params), params
  )
  # Float hyper-parameters become float32 arrays under inject_hyperparams, which
  # moves Adam's bias correction by a few float32 ulps.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4), u1, plain)


def test_schedule_learning_rate():
  params = {"w": jnp.zeros(4)}
  tx = pub_optax.pub_adam(
    optax.piecewise_constant_schedule(1.0, {1: 0.5}), num_tasks=2, scaling="raw"
  )
  state = tx.init(params)
  norms = []
  for s in range(2):
    u, state = tx.update({"w": jax.random.normal(jax.random.PRNGKey(s), (2, 4))}, state, params)
    norms.append(float(jnp.linalg.norm(u["w"])))
  assert norms[0] == pytest.approx(np.sqrt(2) * 1.0, rel=1e-4)
  assert norms[1] == pytest.approx(np.sqrt(2) * 0.5, rel=1e-4)


def test_chain_with_clipping_after_pub():
  params = _params()
  tx = optax.chain(pub_optax.pub_adam(1.0, num_tasks=K), optax.clip_by_global_norm(1e-3))
  updates, state = tx.update(_task_grads(0), tx.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(1e-3, rel=1e-5)
  assert pub_optax.balance_state(state).weights.shape == (K,)


def test_apply_if_finite_skips_non_finite_steps_and_keeps_the_state():
  params = _params()
  tx = pub_optax.apply_if_finite(pub_optax.pub_adam(1e-2, num_tasks=K), max_consecutive_errors=5)
  state = tx.init(params)
  _, state = tx.update(_task_grads(0), state, params)
  bad = jax.tree.map(lambda g: g.at[1].set(jnp.nan), _task_grads(1))
  updates, new_state = jax.jit(tx.update)(bad, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
  jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
  assert int(new_state.notfinite_count) == 1
  assert isinstance(new_state, optax.ApplyIfFiniteState)
  # A non-finite task loss is a non-finite step too.
  _, s3 = tx.update(_task_grads(2), state, params, task_losses=jnp.array([1.0, jnp.inf, 1.0]))
  assert int(s3.total_notfinite) == 1
  # After max_consecutive_errors rejections the update goes through, as in optax.
  s = new_state
  for _ in range(5):
    _, s = tx.update(bad, s, params)
  u, s = tx.update(bad, s, params)
  assert bool(jnp.any(jnp.isnan(u["shared"])))


def test_optax_apply_if_finite_cannot_wrap_a_task_axis_reduction():
  """Why pub_optax ships its own wrapper: optax's rejects with input-shaped zeros."""
  params = _params()
  tx = optax.apply_if_finite(pub_optax.pub_adam(1e-2, num_tasks=K), max_consecutive_errors=5)
  with pytest.raises(TypeError, match="cond branches"):
    tx.update(_task_grads(0), tx.init(params), params)


def test_state_is_stable_under_lax_cond():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, refresh_every=2)
  state = tx.init(params)

  @jax.jit
  def maybe_step(pred, state):
    return jax.lax.cond(pred, lambda s: tx.update(_task_grads(0), s, params)[1], lambda s: s, state)

  s1 = maybe_step(True, state)
  s2 = maybe_step(False, s1)
  jax.tree.map(np.testing.assert_array_equal, s1, s2)


def test_map_params_init_is_a_noop():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K)
  state = tx.init(params)
  mapped = optax.tree.map_params(tx, lambda p: p, state)
  jax.tree.map(np.testing.assert_array_equal, state, mapped)


def test_unknown_extra_args_are_accepted():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K)
  updates, _ = tx.update(
    _task_grads(0), tx.init(params), params, value=jnp.ones(()), something_else=3
  )
  assert jax.tree.structure(updates) == jax.tree.structure(params)


# ---------------------------------------------------------------- bad input


def test_error_gradients_without_task_axis():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=4)
  with pytest.raises(ValueError, match=r"have shape .*expected \(K, \*param_shape\)"):
    tx.update(
      jax.tree.map(lambda p: jnp.ones((4,) + p.shape[1:]) if p.ndim > 1 else p, params),
      tx.init(params),
      params,
    )
  tx2 = pub_optax.pub_adam(1e-2, num_tasks=4)
  with pytest.raises(ValueError, match="need a leading task axis"):
    p = {"w": jnp.zeros((4, 4))}
    tx2.update({"w": jnp.ones((4, 4))}, tx2.init(p), p)


def test_error_task_axes_differ_across_leaves():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K)
  g = _task_grads(0)
  g["head"] = g["head"][:2]
  with pytest.raises(ValueError, match=r"\['head'\] have shape \(2, 2, 2\).*K = 3"):
    tx.update(g, tx.init(params), params)


def test_error_shared_mask_mismatch():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared={"shared": True})
  with pytest.raises(ValueError, match="`shared` mask does not cover the parameter at"):
    tx.update(_task_grads(0), tx.init(params), params)
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared={"shared": True, "head": jnp.array(True)})
  with pytest.raises(ValueError, match="static Python bools"):
    tx.update(_task_grads(0), tx.init(params), params)
  tx = pub_optax.pub_adam(1e-2, num_tasks=K, shared={"shared": False, "head": False})
  with pytest.raises(ValueError, match="selects no leaf"):
    tx.update(_task_grads(0), tx.init(params), params)


def test_error_bad_construction():
  with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
    pub_optax.pub_adam(1e-2, num_tasks=0)
  with pytest.raises(ValueError, match="refresh_every must be a positive"):
    pub_optax.pub_adam(1e-2, num_tasks=2, refresh_every=0)
  with pytest.raises(ValueError, match="scaling must be one of"):
    pub_optax.pub_adam(1e-2, num_tasks=2, scaling="nash")
  with pytest.raises(TypeError):
    pub_optax.pub_adam(1e-2)  # num_tasks is required: no silent K = 2 default


def test_error_task_losses_shape():
  params = _params()
  tx = pub_optax.pub_adam(1e-2, num_tasks=K)
  with pytest.raises(ValueError, match=r"task_losses must have shape \(K,\) = \(3,\)"):
    tx.update(_task_grads(0), tx.init(params), params, task_losses=jnp.ones(2))
