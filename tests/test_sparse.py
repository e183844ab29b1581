"""Row-sparse table gradients (pub_optax.sparse): the same training as the dense path, without K dense copies.

The reference is the dense computation: per-task gradients of the whole table from
``value_and_task_grads``. Every test runs several steps, so the inner state is non-zero on
rows outside the current batch (where the sparse path uses its zero-gradient step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax import RowSparse, lookup_rows

NUM_ROWS, DIM, BATCH, K = 40, 3, 6, 3


def _losses(params, ids, x):
  """K task losses that read the table rows ``ids`` and a dense weight vector."""
  emb = params["table"][ids].sum(axis=1)  # (B, DIM)
  h = jnp.tanh(emb * params["w"][:DIM] + x)
  heads = jnp.stack(
    [h[:, 0] + h[:, 1], h[:, 1] * params["w"][DIM], jnp.sin(h[:, 2] - h[:, 0])], axis=1
  )
  return jnp.mean(jnp.square(heads - jnp.arange(K)), axis=0)


def _batches(steps, seed=0):
  rng = np.random.default_rng(seed)
  return [
    (
      jnp.asarray(rng.integers(0, NUM_ROWS, (BATCH, 2))),
      jnp.asarray(rng.normal(size=(BATCH, DIM)), jnp.float32),
    )
    for _ in range(steps)
  ]


def _params(seed=1):
  rng = np.random.default_rng(seed)
  return {
    "table": jnp.asarray(rng.normal(size=(NUM_ROWS, DIM)), jnp.float32),
    "w": jnp.asarray(rng.normal(size=(DIM + 1,)), jnp.float32),
  }


def _dense_grads(params, ids, x):
  return pub_optax.value_and_task_grads(_losses)(params, ids, x)[1]


def _sparse_grads(params, ids, x):
  lookup = lookup_rows(ids, NUM_ROWS)
  compact = dict(params, table=lookup.gather(params["table"]))
  grads = pub_optax.value_and_task_grads(_losses)(compact, lookup.ids, x)[1]
  return dict(grads, table=lookup.task_grads(grads["table"]))


def _train(tx, grads_fn, steps=6):
  params = _params()
  state = tx.init(params)

  @jax.jit
  def step(params, state, ids, x):
    losses = _losses(params, ids, x)
    updates, state = tx.update(grads_fn(params, ids, x), state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state

  for ids, x in _batches(steps):
    params, state = step(params, state, ids, x)
  return params, state


def _assert_same_training(tx, steps=6, rtol=2e-5, atol=2e-6):
  # float32 rounding of the reordered sums: measured <= 1/27 of this bound over every leaf
  dense_params, dense_state = _train(tx, _dense_grads, steps)
  sparse_params, sparse_state = _train(tx, _sparse_grads, steps)
  for a, b in zip(
    jax.tree.leaves((dense_params, dense_state)), jax.tree.leaves((sparse_params, sparse_state))
  ):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol)
  return dense_params


TABLE_ONLY = {"table": True, "w": False}


@pytest.mark.parametrize("scaling", ["convex", "rms", "raw"])
@pytest.mark.parametrize("shared", [None, TABLE_ONLY, {"table": False, "w": True}])
def test_pub_matches_dense(scaling, shared):
  params = _assert_same_training(
    pub_optax.pub_adam(0.05, num_tasks=K, shared=shared, scaling=scaling)
  )
  assert not np.allclose(params["table"], _params()["table"])  # it trained


@pytest.mark.parametrize(
  "inner",
  [
    optax.scale_by_rms(),
    optax.trace(0.9),
    optax.scale_by_lion(),
    optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam()),
    optax.scale_by_adam(nesterov=True),
  ],
  ids=["rms", "momentum", "lion", "clip_adam", "nadam"],
)
def test_coordinatewise_inner_optimizers_match_dense(inner):
  _assert_same_training(pub_optax.pub(inner, 0.02, num_tasks=K, shared=TABLE_ONLY))


@pytest.mark.parametrize(
  "name", ["equal", "nash_mtl", "mgda", "pcgrad", "imtl_g", "pub_fixed", "famo", "rlw"]
)
def test_registry_methods_match_dense(name):
  _assert_same_training(pub_optax.make_method(name, 0.02, num_tasks=K, shared=TABLE_ONLY))


def test_refresh_weight_decay_and_injected_rate_match_dense():
  tx = pub_optax.make_method(
    "pub",
    0.05,
    num_tasks=K,
    shared=TABLE_ONLY,
    refresh_every=3,
    weight_decay=1e-2,
    inject_learning_rate=True,
  )
  _assert_same_training(tx, steps=7)


def test_apply_if_finite_wrapper_matches_dense():
  _assert_same_training(pub_optax.apply_if_finite(pub_optax.pub_adam(0.05, num_tasks=K), 2))


def test_no_dense_task_copy_of_the_table_is_built():
  """The compiled program holds no (K, num_rows, dim) array: no K dense copies of the table."""
  tx = pub_optax.pub_adam(0.05, num_tasks=K, shared=TABLE_ONLY)
  params = _params()
  ids, x = _batches(1)[0]

  def step(grads_fn):
    def f(params, state):
      return tx.update(grads_fn(params, ids, x), state, params)

    return jax.jit(f).lower(params, tx.init(params)).as_text()

  task_copy = f"{K}x{NUM_ROWS}x{DIM}xf32"
  assert task_copy in step(_dense_grads)  # the dense path builds them (the check can fail)
  assert task_copy not in step(_sparse_grads)


def test_lookup_reindexes_ids():
  ids = jnp.array([[7, 2], [2, 9]])
  lookup = lookup_rows(ids, num_rows=10)
  assert lookup.rows.tolist() == [2, 7, 9, 10]  # padded with num_rows to min(4, 10) slots
  np.testing.assert_array_equal(lookup.rows[lookup.ids], ids)
  table = jnp.arange(20.0).reshape(10, 2)
  np.testing.assert_array_equal(lookup.gather(table)[lookup.ids], table[ids])
  assert lookup.gather(table)[3].tolist() == [0.0, 0.0]  # padding


def test_lookup_under_jit_with_static_size():
  @jax.jit
  def rows(ids):
    return lookup_rows(ids, num_rows=100, size=5).rows

  assert rows(jnp.array([4, 4, 1])).tolist() == [1, 4, 100, 100, 100]


def test_row_sparse_todense():
  g = RowSparse(jnp.array([3, 0, 5]), jnp.arange(6.0).reshape(2, 3, 1), num_rows=5)  # 5 = padding
  np.testing.assert_array_equal(g.todense()[:, :, 0], [[1.0, 0, 0, 0.0, 0], [4.0, 0, 0, 3.0, 0]])


@pytest.mark.parametrize(
  "ids, kwargs, match",
  [
    (jnp.array([0, 10]), {}, r"\[0, 10\)"),
    (jnp.array([-1, 2]), {}, r"\[0, 10\)"),
    (jnp.array([1.0, 2.0]), {}, "integers"),
    (jnp.array([1, 2, 3]), {"size": 2}, "smaller than the 3 distinct"),
  ],
)
def test_lookup_rejects_bad_input(ids, kwargs, match):
  with pytest.raises(ValueError, match=match):
    lookup_rows(ids, 10, **kwargs)


def test_lookup_gather_checks_table_rows():
  with pytest.raises(ValueError, match="table of 10 rows"):
    lookup_rows(jnp.array([1]), 10).gather(jnp.zeros((9, 2)))


def test_per_task_state_is_refused():
  params = _params()
  tx = pub_optax.pub_adam(0.05, num_tasks=K, per_task_state=True)
  ids, x = _batches(1)[0]
  with pytest.raises(ValueError, match="per_task_state"):
    tx.update(_sparse_grads(params, ids, x), tx.init(params), params)


def test_factored_inner_state_is_refused():
  params = {"table": jnp.ones((NUM_ROWS, 200)), "w": jnp.ones(3)}  # factored above 128 columns
  tx = pub_optax.pub(optax.scale_by_factored_rms(), 0.1, num_tasks=2)
  grads = {
    "table": RowSparse(jnp.array([1, 2]), jnp.ones((2, 2, 200)), NUM_ROWS),
    "w": jnp.ones((2, 3)),
  }
  with pytest.raises(
    ValueError,
    match=r"state per coordinate; a state leaf of a table of shape \(40, 200\) has shape",
  ):
    tx.update(grads, tx.init(params), params)


def test_mismatched_row_sparse_leaf_is_refused():
  params = _params()
  tx = pub_optax.pub_adam(0.05, num_tasks=K)
  bad = {
    "table": RowSparse(jnp.array([1, 2]), jnp.ones((K, 3, DIM)), NUM_ROWS),
    "w": jnp.ones((K, DIM + 1)),
  }
  with pytest.raises(ValueError, match=r"values of shape \(K, n, ...\)"):
    tx.update(bad, tx.init(params), params)
  wrong_table = {
    "table": RowSparse(jnp.array([1, 2]), jnp.ones((K, 2, DIM)), NUM_ROWS + 1),
    "w": jnp.ones((K, DIM + 1)),
  }
  with pytest.raises(ValueError, match="expected"):
    tx.update(wrong_table, tx.init(params), params)
