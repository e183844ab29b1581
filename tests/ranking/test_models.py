"""Property tests of the NNX multi-task ranking models (pub_optax.ranking.models)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pub_optax.ranking import models as M

CARD = (5, 7, 11)
N_NUM = 4
B = 32
SMALL = {
  "shared_bottom": dict(bottom_dims=(16, 8), tower_dims=(8,)),
  "mmoe": dict(n_experts=3, expert_dims=(16, 8), tower_dims=(8,)),
  "ple": dict(n_shared_experts=2, n_task_experts=1, expert_dims=(16, 8), tower_dims=(8,)),
  "esmm": dict(bottom_dims=(16,), tower_dims=(8,)),
  "aitm": dict(bottom_dims=(16, 8), tower_dims=(8,)),
}
# The models of this file (test_models_more.py tests the others of MODEL_NAMES).
CASES = [(name, k) for name in SMALL for k in (1, 2, 3) if name != "esmm" or k == 2]


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
  """XLA compilation dominates this file; its optimisation passes do not change the properties
  tested (exact zeros stay exact), so skip them here and restore the setting afterwards."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def make(name, n_tasks, seed=0, **overrides):
  kwargs = {**SMALL[name], "embed_dim": 8, "dropout": 0.2, **overrides}
  return M.build_model(name, CARD, N_NUM, n_tasks, rngs=nnx.Rngs(seed), **kwargs)


def batch(seed=0, n=B):
  rng = np.random.default_rng(seed)
  cat = np.stack([rng.integers(0, c, n) for c in CARD], axis=1).astype(np.int32)
  return jnp.asarray(cat), jnp.asarray(rng.normal(size=(n, N_NUM)), jnp.float32)


def auc(labels, scores):
  """ROC AUC by the rank (Mann-Whitney) formula with tied scores given their average rank."""
  labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
  order = np.argsort(scores, kind="mergesort")
  _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
  ranks = np.empty(len(scores))
  ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
  n_pos, n_neg = labels.sum(), (~labels).sum()
  return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def task_grads(graphdef, params, rest, cat, num, labels):
  """Per-task losses, per-task gradients (leading task axis) and the new non-param state."""

  def losses(p):
    logits, new_rest = M.apply(graphdef, p, rest, cat, num)
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean(0), new_rest

  loss, vjp, new_rest = jax.vjp(losses, params, has_aux=True)
  (grads,) = jax.vmap(vjp)(jnp.eye(loss.shape[0], dtype=loss.dtype))
  return loss, grads, new_rest


ADAM = optax.adam(1e-2)


@functools.partial(jax.jit, static_argnums=0)
def train_step(graphdef, params, rest, opt_state, cat, num, labels):
  """One jitted step: per-task gradients by one vmapped VJP, then Adam on their sum.

  Returns ``(params, rest, opt_state, per_task_grads)``; the gradient tests of the trained
  models call it too, so each of those compiles once.
  """
  _, grads, rest = task_grads(graphdef, params, rest, cat, num, labels)
  updates, opt_state = ADAM.update(jax.tree.map(lambda g: g.sum(0), grads), opt_state, params)
  return optax.apply_updates(params, updates), rest, opt_state, grads


def test_auc_helper():
  assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
  assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert auc([0, 1, 1, 0], [0.1, 0.4, 0.2, 0.3]) == 0.75


# --------------------------------------------------------------------------- forward & mask


@pytest.mark.parametrize("name,k", CASES)
def test_forward_shape_dtype_finite(name, k):
  model = make(name, k)
  cat, num = batch()
  for mode in (model.train, model.eval):
    mode()
    out = model(cat, num)
    assert out.shape == (B, k) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("name,k", CASES)
def test_shared_mask_structure(name, k):
  model = make(name, k)
  mask, params = model.shared_mask(), nnx.state(model, nnx.Param)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  leaves = jax.tree.leaves(mask)
  assert all(type(leaf) is bool for leaf in leaves)
  assert mask["features"]["tables"][0]["embedding"].get_value() is True
  assert mask["features"]["dense"]["kernel"].get_value() is True
  assert any(leaves) and not all(leaves)  # every model has shared and task-specific parts
  # the mask is usable with optax on the params tree
  masked = optax.masked(optax.set_to_zero(), mask)
  zeroed, _ = masked.update(params, masked.init(params), params)
  for z, p, s in zip(jax.tree.leaves(zeroed), jax.tree.leaves(params), leaves):
    assert bool(jnp.all(z == 0)) if s else bool(jnp.all(z == p))


# One model per (name, K, options), in train mode, split once: the per-task-gradient function
# compiles once per entry and serves the mask, training and functional tests alike. XLA compile
# time dominates this file, so only Shared-Bottom keeps BatchNorm + dropout (it also backs the
# functional-step tests); the others exercise their own wiring without norm and dropout.
PLAIN = (("norm", None), ("dropout", 0.0))
GRAD_CASES = {
  "shared_bottom-3": ("shared_bottom", 3, ()),
  "mmoe-3": ("mmoe", 3, PLAIN),
  "ple-3": ("ple", 3, PLAIN),
  "ple-2-three-levels": (
    "ple",
    2,
    PLAIN + (("expert_dims", (8, 8, 8)), ("n_shared_experts", 1), ("n_task_experts", 1)),
  ),
  "esmm-2": ("esmm", 2, PLAIN),
  "aitm-3": ("aitm", 3, PLAIN),
  "aitm-2-detached": ("aitm", 2, PLAIN + (("detach_transfer", True),)),
}
TRAIN_CASES = {
  "shared_bottom": "shared_bottom-3",
  "mmoe": "mmoe-3",
  "ple": "ple-3",
  "esmm": "esmm-2",
  "aitm": "aitm-3",
}


@functools.cache
def split_model(case):
  name, k, extra = GRAD_CASES[case]
  return M.split(make(name, k, **dict(extra)))


def owner(keys):
  """The task that a task-specific parameter belongs to, read from its path."""
  if keys[0] in ("towers", "gates", "tasks"):
    return keys[1]  # towers[k], gates[k], AITM tasks[k]
  if keys[0] == "levels":
    return keys[3]  # levels[l].task_experts[k] / task_gates[k]
  assert keys[0] == "cvr_tower", keys
  return 1


@pytest.mark.parametrize("case", GRAD_CASES)
def test_mask_matches_per_task_gradients(case):
  """False leaves get gradient from exactly one task; True leaves from several (all tasks
  except along AITM's transfer chain, where task t's modules serve tasks t..K-1)."""
  name, k, _ = GRAD_CASES[case]
  graphdef, params, rest = split_model(case)
  cat, num = batch(1)
  labels = jnp.asarray(np.random.default_rng(2).integers(0, 2, (B, k)), jnp.float32)
  if case in TRAIN_CASES.values():
    grads = train_step(graphdef, params, rest, ADAM.init(params), cat, num, labels)[3]
  else:
    grads = jax.jit(task_grads, static_argnums=0)(graphdef, params, rest, cat, num, labels)[1]
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  mask = jax.tree.leaves(nnx.merge(graphdef, params, rest).shared_mask())
  assert len(flat) == len(mask)
  n_shared = 0
  for (path, g), shared in zip(flat, mask):
    keys = tuple(getattr(e, "key", getattr(e, "name", None)) for e in path)
    tasks = set(np.flatnonzero(np.any(np.asarray(g).reshape(k, -1) != 0, axis=1)).tolist())
    if not shared:  # only its own task reaches it
      assert tasks == {owner(keys)}, (keys, tasks)
    elif name == "aitm" and keys[0] == "tasks":
      assert tasks == set(range(keys[1], k)), (keys, tasks)
      n_shared += 1
    else:
      assert tasks == set(range(k)), (keys, tasks)
      n_shared += 1
  assert n_shared > 0


def test_mask_rules_for_ple_and_aitm():
  ple = make("ple", 2, expert_dims=(8, 8, 8))
  mask = ple.shared_mask()["levels"]
  assert [jax.tree.leaves(mask[l]["task_experts"])[0] for l in range(3)] == [True, True, False]
  assert [jax.tree.leaves(mask[l]["task_gates"][0])[0] for l in range(3)] == [True, False, False]
  aitm = make("aitm", 2).shared_mask()["tasks"]
  assert jax.tree.leaves(aitm[0]["bottom"])[0] and not jax.tree.leaves(aitm[1]["bottom"])[0]
  assert not any(jax.tree.leaves(aitm[0]["tower"]))


# --------------------------------------------------------------------------- ESMM


def test_esmm_ctcvr_is_product_of_towers():
  model = make("esmm", 2)
  model.eval()
  cat, num = batch(3)
  out = model(cat, num)
  ab = model.tower_logits(cat, num)
  np.testing.assert_array_equal(out[:, 0], ab[:, 0])
  np.testing.assert_allclose(
    jax.nn.sigmoid(out[:, 1]), jax.nn.sigmoid(ab[:, 0]) * jax.nn.sigmoid(ab[:, 1]), atol=1e-6
  )


def test_product_logit_stable_and_exact():
  vals = np.array([-200.0, -50.0, -10.0, -1.0, 0.0, 1.0, 10.0, 50.0, 200.0])
  a, b = np.meshgrid(vals, vals)
  got = M.product_logit(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  # independent closed form: p / (1 - p) = 1 / (e^-a + e^-b + e^-(a+b))
  ref = -np.logaddexp.reduce(np.stack([-a, -b, -a - b]), axis=0)
  assert bool(jnp.all(jnp.isfinite(got)))
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)
  ga, gb = jax.jit(jax.vmap(jax.grad(M.product_logit, argnums=(0, 1))))(
    jnp.asarray(a.ravel(), jnp.float32), jnp.asarray(b.ravel(), jnp.float32)
  )
  assert bool(jnp.all(jnp.isfinite(ga)) & jnp.all(jnp.isfinite(gb)))
  ext = jnp.array([-50.0, 50.0])
  np.testing.assert_allclose(
    jax.nn.sigmoid(M.product_logit(ext, ext[::-1])),
    jax.nn.sigmoid(ext) * jax.nn.sigmoid(ext[::-1]),
    atol=1e-6,
  )


def test_aitm_calibration_penalty():
  assert float(M.calibration_penalty(jnp.array([[3.0, 1.0, -2.0]]))) == 0.0
  np.testing.assert_allclose(
    M.calibration_penalty(jnp.array([[0.0, 0.0], [-50.0, 50.0]])), 0.5, rtol=1e-6
  )


# --------------------------------------------------------------------------- functional step

APPLY = jax.jit(M.apply, static_argnums=0)


def _arrays(state):
  return [
    jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    for x in jax.tree.leaves(state)
  ]


def test_apply_train_mode_updates_state_and_matches_separate_grads():
  graphdef, params, rest = split_model("shared_bottom-3")
  cat, num = batch(4)
  labels = jnp.asarray(np.random.default_rng(5).integers(0, 2, (B, 3)), jnp.float32)
  out1, rest1 = APPLY(graphdef, params, rest, cat, num)
  out2, rest2 = APPLY(graphdef, params, rest1, cat, num)
  again, _ = APPLY(graphdef, params, rest, cat, num)
  np.testing.assert_array_equal(out1, again)  # pure: same state in, same logits out
  assert not np.allclose(out1, out2)  # dropout RNG advanced between calls
  assert jax.tree.structure(rest1) == jax.tree.structure(rest)
  stats = lambda r: jax.tree.leaves(nnx.state(nnx.merge(graphdef, params, r), nnx.BatchStat))
  assert stats(rest) and all(not np.allclose(x, y) for x, y in zip(stats(rest), stats(rest1)))
  # one vmapped VJP over the rows of eye(K): row t is task t's gradient (checked against central
  # differences of task t's loss along random directions, same dropout mask via the same rest)
  _, new_rest, _, grads = train_step(graphdef, params, rest, ADAM.init(params), cat, num, labels)
  for x, y in zip(_arrays(new_rest), _arrays(rest1)):
    np.testing.assert_array_equal(x, y)

  def task_losses(p):
    logits = np.asarray(APPLY(graphdef, p, rest, cat, num)[0], np.float64)
    return np.mean(np.logaddexp(0, logits) - np.asarray(labels) * logits, axis=0)

  rng, eps = np.random.default_rng(8), 1e-2
  for _ in range(2):
    v = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    norm = optax.tree.norm(v)
    v = jax.tree.map(lambda x: x / norm, v)
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * d, params, v)
    numeric = (task_losses(shifted(eps)) - task_losses(shifted(-eps))) / (2 * eps)
    analytic = sum(
      np.asarray(g).reshape(3, -1) @ np.asarray(d).ravel()
      for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v))
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-5)
  assert APPLY._cache_size() == 1  # no recompilation across calls


def test_apply_eval_mode_is_deterministic_and_stateless():
  model = nnx.merge(*split_model("shared_bottom-3"))
  model.eval()
  graphdef, params, rest = M.split(model)
  cat, num = batch(6)
  out1, rest1 = APPLY(graphdef, params, rest, cat, num)
  out2, _ = APPLY(graphdef, params, rest1, cat, num)
  np.testing.assert_array_equal(out1, out2)
  for x, y in zip(_arrays(rest1), _arrays(rest)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_allclose(out1, model(cat, num), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- training sanity


@pytest.mark.parametrize("name", TRAIN_CASES)
def test_trains_on_separable_problem(name):
  """A funnel: task 0 = field-0 id < 3, task t = task t-1 and field-t id < cardinality/2.

  Minibatches of B from 512 rows in train mode, per-task gradients summed, Adam.
  """
  graphdef, params, rest = split_model(TRAIN_CASES[name])
  k = GRAD_CASES[TRAIN_CASES[name]][1]
  cat, num = batch(7, 512)
  y = np.asarray(cat[:, 0] < 3)
  cols = [y]
  for t in range(1, k):
    y = y & np.asarray(cat[:, t] < CARD[t] // 2)
    cols.append(y)
  labels = jnp.asarray(np.stack(cols, 1), jnp.float32)
  opt_state = ADAM.init(params)
  for step in range(100):
    rows = np.random.default_rng(step).choice(512, B, replace=False)
    params, rest, opt_state, _ = train_step(
      graphdef, params, rest, opt_state, cat[rows], num[rows], labels[rows]
    )
  trained = nnx.merge(graphdef, params, rest)
  trained.eval()
  scores = np.concatenate([trained(cat[i : i + B], num[i : i + B]) for i in range(0, 512, B)])
  aucs = [auc(labels[:, t], scores[:, t]) for t in range(k)]
  assert min(aucs) > 0.9, (name, aucs)


# --------------------------------------------------------------------------- options & errors


@pytest.mark.parametrize("norm", ["layer", None])
def test_norm_options(norm):
  model = make("ple", 2, norm=norm)
  assert not nnx.state(model, nnx.BatchStat)
  out = model(*batch())
  assert out.shape == (B, 2) and bool(jnp.all(jnp.isfinite(out)))


def test_no_numerical_features():
  model = M.build_model(
    "shared_bottom",
    CARD,
    0,
    2,
    rngs=nnx.Rngs(0),
    embed_dim=8,
    bottom_dims=(8,),
    tower_dims=(4,),
    norm=None,
    dropout=0.0,
  )
  cat, _ = batch()
  assert model(cat, None).shape == (B, 2)
  assert model(cat, jnp.zeros((B, 0))).shape == (B, 2)
  assert model.features.dense is None


def test_build_model_names():
  assert M.MODEL_NAMES[:5] == ("shared_bottom", "mmoe", "ple", "esmm", "aitm")
  classes = (M.SharedBottom, M.MMoE, M.PLE, M.ESMM, M.AITM)
  for name, cls in zip(M.MODEL_NAMES[:5], classes):
    assert type(make(name, 2)) is cls
  with pytest.raises(ValueError, match="valid names: shared_bottom, mmoe, ple, esmm, aitm"):
    M.build_model("dcn", CARD, N_NUM, 2, rngs=nnx.Rngs(0))


def test_bad_inputs_raise():
  mmoe3 = make("mmoe", 3)
  cat, num = batch()
  with pytest.raises(ValueError, match=r"\(batch, 3\).*\(32, 2\)"):
    mmoe3(cat[:, :2], num)
  with pytest.raises(ValueError, match=r"\(batch, 4\).*\(32, 5\)"):
    mmoe3(cat, jnp.ones((B, 5)))
  with pytest.raises(ValueError, match="integer"):
    mmoe3(cat.astype(jnp.float32), num)
  with pytest.raises(ValueError, match="batch sizes"):
    mmoe3(cat, num[:4])
  graphdef, params, rest = M.split(mmoe3)
  with pytest.raises(ValueError, match=r"\(batch, 4\)"):  # at trace time under jit
    jax.jit(M.apply, static_argnums=0)(graphdef, params, rest, cat, num[:, :3])


def test_bad_construction_raises():
  with pytest.raises(ValueError, match="exactly 2 tasks.*n_tasks=3"):
    make("esmm", 3)
  with pytest.raises(ValueError, match="exactly 2 tasks.*n_tasks=1"):
    make("esmm", 1)
  for name in ("shared_bottom", "mmoe", "ple", "aitm"):
    with pytest.raises(ValueError, match="n_tasks must be"):
      make(name, 0)
  with pytest.raises(ValueError, match="norm must be one of"):
    make("mmoe", 2, norm="group")
  with pytest.raises(ValueError, match="cardinalities"):
    M.MMoE((), N_NUM, 2, rngs=nnx.Rngs(0))
