"""The contract every registered multi-task method keeps, checked for every name in the registry.

One test function per property, each parametrised over ``pub_optax.method_names()`` (read at
import), so a newly registered method gets every check by being registered. The properties follow
optax's common tests for its contrib optimizers (no recompilation, ``lax.scan`` under ``jit``,
``tree.map_params``, ``inject_hyperparams``, dtypes, ``lax.cond``, extra arguments) plus what a
task-axis transformation adds: serialization, ``apply_if_finite``, row-sparse tables and the
refusal of gradients without a task axis.

The problems are tiny (a few parameters) and every compiled step is built once per method and
reused (``functools.lru_cache``), so the file's time is mostly one compilation per program.

A (method, property) pair that does not hold is listed in ``KNOWN_FAILURES`` with the reason and
runs as a strict xfail: it fails the suite again as soon as the method keeps the property.
"""

import functools
import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax import METHODS, make_method, method_names

# Compilation is most of this file's time; the properties do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

NAMES = method_names()
K = 3
LR = 0.05
SHARED = {"w": True, "heads": False}
# A schedule, so every method is also checked to take one: 0.1 decaying to 0.01 over the run.
SCAN_STEPS = 200
SCAN_SCHEDULE = optax.linear_schedule(0.1, 0.01, SCAN_STEPS)

# (method, property) -> why the method does not keep the property.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _cases(prop: str) -> list:
  """Every method name as a parameter, the known failures of ``prop`` as strict xfails."""
  return [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name, prop]))
    if (name, prop) in KNOWN_FAILURES
    else name
    for name in NAMES
  ]


def _mark_known_failure(request, name: str, prop: str) -> None:
  """``_cases`` for tests with more parameters than the method: a strict xfail, set at run time."""
  if (name, prop) in KNOWN_FAILURES:
    request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name, prop]))


# ----------------------------------------------------------------------------- the problem

# Three least-squares tasks L_k = ||A_k w + h_k - b_k||² sharing w (6 coordinates), each with its
# own bias h_k. Three tasks, not two: some weightings (Krum) need K > 2; more shared coordinates
# than tasks, as the Gram-matrix methods assume (with as many, IMTL-G and ConFIG barely move).
_RNG = np.random.default_rng(0)
A = np.asarray(_RNG.normal(size=(K, 8, 6)), np.float32)
B = np.asarray(_RNG.normal(size=(K, 8)), np.float32)


def task_losses(params):
  w, heads = params["w"], params["heads"]
  residual = jnp.einsum("kij,j->ki", A.astype(w.dtype), w) + heads[:, None] - B.astype(w.dtype)
  return jnp.sum(jnp.square(residual), axis=1)


task_grads = pub_optax.value_and_task_grads(task_losses)
jit_task_grads = jax.jit(task_grads)


def initial_params(dtype=jnp.float32):
  # Far from the optimum (summed loss about 540 against about 10 near the Pareto set).
  w = jnp.array([3.0, -1.8, 0.6, 0.6, -1.8, 3.0], dtype)
  return {"w": w, "heads": jnp.array([1.0, -1.0, 0.5], dtype)}


@functools.cache
def transformation(name: str, inject: bool = False) -> optax.GradientTransformationExtraArgs:
  return make_method(name, LR, num_tasks=K, shared=SHARED, inject_learning_rate=inject)


TRACES: dict = {}


@functools.cache
def jitted_step(name: str):
  """``step(params, state) -> (params, state, updates)``, jitted once per method; traces counted."""
  tx = transformation(name)
  TRACES[name] = 0

  @jax.jit
  def step(params, state):
    TRACES[name] += 1
    losses, grads = task_grads(params)
    updates, state = tx.update(grads, state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state, updates

  return step


def run_steps(name, steps, params=None, state=None):
  """``steps`` jitted steps from the initial params; the params, state and updates of each."""
  step = jitted_step(name)
  params = initial_params() if params is None else params
  state = transformation(name).init(params) if state is None else state
  history = []
  for _ in range(steps):
    params, state, updates = step(params, state)
    history.append((params, state, updates))
  return history


@functools.cache
def guarded_injected(name: str):
  """``(tx, update)``: the method with an injected learning rate inside ``apply_if_finite``,
  its update jitted once. One program serves the injected-rate and the non-finite-step
  properties (compiling is most of each test's time)."""
  tx = pub_optax.apply_if_finite(transformation(name, inject=True), 3)
  return tx, jax.jit(
    lambda params, state, grads, losses: tx.update(grads, state, params, task_losses=losses)
  )


def dtypes(tree):
  """Every leaf's dtype and weak type (what ``jit`` keys its cache and ``lax.cond`` its branches on)."""
  return [
    (jnp.dtype(x.dtype), bool(x.weak_type))
    if isinstance(x, jax.ShapeDtypeStruct)
    else (jnp.result_type(x), bool(jax.typeof(x).weak_type))
    for x in jax.tree.leaves(tree)
  ]


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, rtol, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete_and_its_hyper_parameters_are_accepted(name):
  info = METHODS[name]
  assert info.description.strip() and info.reference.strip()
  assert info.level in ("gradient", "update", "loss")
  assert isinstance(info.row_sparse, bool) and isinstance(info.needs_losses, bool)
  tx = make_method(name, LR, num_tasks=K, shared=SHARED, **info.hyper)  # every name, its default
  params = initial_params()
  losses, grads = jit_task_grads(params)
  out, _ = jax.eval_shape(
    lambda s: tx.update(grads, s, params, task_losses=losses), tx.init(params)
  )
  assert jax.tree.structure(out) == jax.tree.structure(params)
  # needs_losses says the truth: without task_losses such a method refuses the step.
  if info.needs_losses:
    with pytest.raises(ValueError, match="task_losses"):
      jax.eval_shape(lambda s: tx.update(grads, s, params), tx.init(params))
  else:
    jax.eval_shape(lambda s: tx.update(grads, s, params), tx.init(params))


# ----------------------------------------------------------------------------- optax interplay


@pytest.mark.parametrize("name", _cases("extra_args"))
def test_unknown_extra_args_are_accepted(name):
  params = initial_params()
  losses, grads = jit_task_grads(params)
  extra = {"task_losses": losses, "some_extra": 3, "value": losses.sum()}
  # Bare and inside apply_if_finite (shapes only; the injected rate is checked with its property).
  for tx in (transformation(name), pub_optax.apply_if_finite(transformation(name), 3)):
    init = tx.init(params)
    updates, state = jax.eval_shape(lambda s: tx.update(grads, s, params, **extra), init)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert jax.tree.structure(state) == jax.tree.structure(init)


@pytest.mark.parametrize("name", _cases("no_recompilation"))
def test_no_recompilation_on_second_jitted_call(name):
  step = jitted_step(name)
  params, state, _ = run_steps(name, 1)[-1]
  traces, compiled = TRACES[name], step._cache_size()
  for _ in range(2):
    params, state, _ = step(params, state)
  assert TRACES[name] == traces == 1
  assert step._cache_size() == compiled == 1


@pytest.mark.parametrize("name", _cases("map_params"))
def test_map_params_on_init_state_is_a_noop(name):
  tx = transformation(name)
  state = tx.init(initial_params())
  assert_trees_equal(optax.tree.map_params(tx, lambda p: p, state), state)


@pytest.mark.parametrize("name", _cases("inject_hyperparams"))
def test_injected_learning_rate_gives_the_plain_updates(name):
  tx, update = guarded_injected(name)  # apply_if_finite passes finite steps through unchanged
  params = initial_params()
  state = init = tx.init(params)
  for p1, s1, u1 in run_steps(name, 3):
    losses, grads = jit_task_grads(params)
    updates, state = update(params, state, grads, losses)
    params = optax.apply_updates(params, updates)
    # Float hyper-parameters become float32 arrays in the injected state: a few ulps apart.
    assert_trees_close(updates, u1, rtol=1e-5, atol=1e-7)
    assert_trees_close(params, p1, rtol=1e-5, atol=1e-7)
    assert_trees_close(pub_optax.balance_state(state), pub_optax.balance_state(s1), 1e-4, 1e-6)
    assert dtypes(updates) == dtypes(u1)
  injected = state.inner_state
  assert float(injected.hyperparams["learning_rate"]) == pytest.approx(LR)
  # It keeps its state's dtypes too, and takes unknown extra arguments like the plain one.
  assert dtypes(injected) == dtypes(init.inner_state)
  tx = transformation(name, inject=True)
  losses, grads = jit_task_grads(initial_params())
  updates, state = jax.eval_shape(
    lambda s: tx.update(grads, s, initial_params(), task_losses=losses, some_extra=3),
    init.inner_state,
  )
  assert dtypes(state) == dtypes(init.inner_state)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_updates_keep_the_params_dtype_and_state_dtypes_are_stable(name, dtype, request):
  _mark_known_failure(request, name, f"dtypes_{jnp.dtype(dtype).name}")
  want = [(jnp.dtype(dtype), False)] * 2
  if dtype == jnp.float32:  # the compiled float32 step runs anyway: its values too
    for params, _, updates in run_steps(name, 3):
      assert dtypes(updates) == dtypes(params) == want
      assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))
  # Dtypes are fixed at trace time: the constant rate (bfloat16), and a schedule with weight
  # decay, checked on shapes only.
  scheduled = make_method(name, SCAN_SCHEDULE, num_tasks=K, shared=SHARED, weight_decay=1e-3)
  for tx in (scheduled,) if dtype == jnp.float32 else (transformation(name), scheduled):

    def step(params, state):
      losses, grads = task_grads(params)
      updates, state = tx.update(grads, state, params, task_losses=losses)
      return optax.apply_updates(params, updates), state, updates

    params = initial_params(dtype)
    init = state = tx.init(params)
    for _ in range(2):
      params, state, updates = jax.eval_shape(step, params, state)
      assert dtypes(updates) == dtypes(params) == want
      assert jax.tree.structure(state) == jax.tree.structure(init)
      assert dtypes(state) == dtypes(init)


@pytest.mark.parametrize("name", _cases("scan"))
def test_converges_inside_lax_scan_under_jit_with_a_schedule(name):
  tx = make_method(name, SCAN_SCHEDULE, num_tasks=K, shared=SHARED)

  def step(carry, _):
    params, state = carry
    losses, grads = task_grads(params)
    updates, state = tx.update(grads, state, params, task_losses=losses)
    return (optax.apply_updates(params, updates), state), jnp.sum(losses)

  params = initial_params()
  run = jax.jit(lambda carry: jax.lax.scan(step, carry, None, length=SCAN_STEPS))
  (params, state), totals = run((params, tx.init(params)))
  start, end = float(totals[0]), float(jnp.sum(task_losses(params)))
  assert math.isfinite(end) and end < start / 5, (start, end)
  assert np.all(np.isfinite(np.asarray(pub_optax.balance_state(state).weights)))


@pytest.mark.parametrize("name", _cases("serialization"))
def test_state_survives_serialization_and_training_resumes_bit_identically(name):
  tx = transformation(name)
  params, state, _ = run_steps(name, 3)[-1]
  blob = flax.serialization.to_bytes(state)
  restored = flax.serialization.from_bytes(tx.init(initial_params()), blob)
  assert_trees_equal(restored, state)
  assert dtypes(restored) == dtypes(state)
  original = run_steps(name, 3, params=params, state=state)
  resumed = run_steps(name, 3, params=params, state=restored)
  for a, b in zip(original, resumed):
    assert_trees_equal(b, a)


@pytest.mark.parametrize("name", _cases("lax_cond"))
def test_state_is_stable_under_lax_cond(name):
  tx = transformation(name)
  params = initial_params()

  def update(state):
    losses, grads = task_grads(params)
    return tx.update(grads, state, params, task_losses=losses)[1]

  maybe_step = jax.jit(lambda pred, state: jax.lax.cond(pred, update, lambda s: s, state))
  init = tx.init(params)
  # Both branches must give the same tree, shapes and dtypes (weak types included): lowering the
  # program checks it for the first step and for a later one.
  maybe_step.lower(True, init)
  later = jax.eval_shape(update, jax.eval_shape(update, init))
  maybe_step.lower(True, later)
  assert jax.tree.structure(later) == jax.tree.structure(init)
  assert dtypes(later) == dtypes(init)


# ----------------------------------------------------------------------------- row-sparse tables

NUM_ROWS, DIM, BATCH = 6, 2, 4
TABLE_SHARED = {"table": True, "w": False}
SPARSE_RTOL, SPARSE_ATOL = 2e-5, 2e-6
_IDS = np.random.default_rng(1).integers(0, NUM_ROWS, (3, BATCH))


def table_losses(params, ids):
  emb = params["table"][ids]  # (BATCH, DIM)
  first = jnp.mean(jnp.square(emb @ params["w"] - 1.0))
  second = jnp.mean(jnp.square(emb[:, 0] * emb[:, 1] + 0.5))
  third = jnp.mean(jnp.square(emb[:, 1] - params["w"][0]))
  return jnp.stack([first, second, third])


def table_params():
  rng = np.random.default_rng(2)
  return {
    "table": jnp.asarray(rng.normal(size=(NUM_ROWS, DIM)), jnp.float32),
    "w": jnp.asarray(rng.normal(size=(DIM,)), jnp.float32),
  }


def dense_table_grads(params, ids):
  return pub_optax.value_and_task_grads(table_losses)(params, ids)


def sparse_table_grads(params, ids):
  lookup = pub_optax.lookup_rows(ids, NUM_ROWS, size=BATCH)
  compact = dict(params, table=lookup.gather(params["table"]))
  losses, grads = pub_optax.value_and_task_grads(table_losses)(compact, lookup.ids)
  return losses, dict(grads, table=lookup.task_grads(grads["table"]))


@functools.cache
def train_table(name):
  """``(dense, sparse)``: params, state and updates after 3 jitted steps from dense and from
  row-sparse table gradients (both paths in one program: one compilation)."""
  tx = make_method(name, LR, num_tasks=K, shared=TABLE_SHARED)

  def step(params, state, ids, grads_fn):
    losses, grads = grads_fn(params, ids)
    updates, state = tx.update(grads, state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state, updates

  @jax.jit
  def both(dense, sparse, ids):
    return step(*dense[:2], ids, dense_table_grads), step(*sparse[:2], ids, sparse_table_grads)

  params = table_params()
  dense = sparse = (params, tx.init(params))
  for ids in _IDS:
    dense, sparse = both(dense, sparse, jnp.asarray(ids))
  return dense, sparse


def _skip_or_refuse_row_sparse(name):
  """A method declared ``row_sparse=False`` must refuse RowSparse leaves, or the test is skipped."""
  tx = make_method(name, LR, num_tasks=K, shared=TABLE_SHARED)
  params = table_params()
  losses, grads = sparse_table_grads(params, jnp.asarray(_IDS[0]))
  try:
    jax.eval_shape(lambda s: tx.update(grads, s, params, task_losses=losses), tx.init(params))
  except ValueError:
    return  # refused, as its registry entry (row_sparse=False) announces
  pytest.skip(f"{name} is declared row_sparse=False (not exact on table rows) but takes them")


@pytest.mark.parametrize("name", _cases("row_sparse"))
def test_row_sparse_table_gradients_give_the_dense_updates(name):
  if not METHODS[name].row_sparse:
    return _skip_or_refuse_row_sparse(name)
  (dense_params, dense_state, dense_updates), (params, state, updates) = train_table(name)
  assert_trees_close(updates, dense_updates, rtol=SPARSE_RTOL, atol=SPARSE_ATOL)
  assert_trees_close(params, dense_params, rtol=SPARSE_RTOL, atol=SPARSE_ATOL)
  weights = pub_optax.balance_state(state).weights
  np.testing.assert_allclose(weights, pub_optax.balance_state(dense_state).weights, 1e-4, 1e-6)
  assert not np.allclose(dense_params["table"], table_params()["table"])  # it trained


@pytest.mark.parametrize("name", _cases("row_sparse_state"))
def test_row_sparse_table_gradients_give_the_dense_state(name):
  """The whole optimizer state (moments, weighting state, diagnostics) as on the dense path."""
  if not METHODS[name].row_sparse:
    return _skip_or_refuse_row_sparse(name)
  dense_state, state = train_table(name)[0][1], train_table(name)[1][1]
  assert jax.tree.structure(state) == jax.tree.structure(dense_state)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(dense_state), jax.tree.leaves(state)):
    np.testing.assert_allclose(
      b, a, rtol=SPARSE_RTOL, atol=SPARSE_ATOL, err_msg=jax.tree_util.keystr(path)
    )


# ----------------------------------------------------------------------------- non-finite steps


@pytest.mark.parametrize("name", _cases("apply_if_finite"))
def test_apply_if_finite_leaves_params_and_state_untouched_on_nan(name):
  tx, update = guarded_injected(name)
  params = initial_params()
  state = tx.init(params)
  losses, grads = jit_task_grads(params)
  updates, state = update(params, state, grads, losses)
  params = optax.apply_updates(params, updates)
  losses, grads = jit_task_grads(params)
  bad_grads = dict(grads, w=grads["w"].at[1, 0].set(jnp.nan))
  bad_losses = losses.at[0].set(jnp.inf)
  for g, l in ((bad_grads, losses), (grads, bad_losses)):
    updates, new_state = update(params, state, g, l)
    assert_trees_equal(optax.apply_updates(params, updates), params)
    assert_trees_equal(new_state.inner_state, state.inner_state)
    assert int(new_state.notfinite_count) == 1 and not bool(new_state.last_finite)
  # A finite step after it moves on from the kept state.
  updates, state = update(params, new_state, grads, losses)
  assert int(pub_optax.balance_state(state.inner_state).count) == 2
  assert np.any(np.asarray(updates["w"]) != 0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("with_params", [True, False], ids=["params", "no_params"])
@pytest.mark.parametrize("name", _cases("task_axis"))
def test_gradients_without_task_axis_are_refused(name, with_params):
  tx = transformation(name)
  params = initial_params()
  losses, grads = jit_task_grads(params)
  unstacked = jax.tree.map(lambda g: g.sum(axis=0), grads)  # params-shaped
  args = (params,) if with_params else ()
  with pytest.raises(ValueError, match="task axis"):
    tx.update(unstacked, tx.init(params), *args, task_losses=losses)
