"""The single-task baseline, OMoE, Cross-stitch and DSelect-k models: shapes, the shared mask
against per-task gradients, each architecture's defining property, row-sparse embeddings and the
``pub-optax train`` command."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pub_optax
from pub_optax.ranking import cli
from pub_optax.ranking import models as M
from pub_optax.ranking.data.types import RankingData
from pub_optax.ranking.train import Trainer, train_batches

pytestmark = pytest.mark.usefixtures("fast_compiles")

CARD = (5, 7, 11)
N_NUM = 4
B = 32
SMALL = {
  "single_task": dict(bottom_dims=(16, 8), tower_dims=(8,)),
  "omoe": dict(n_experts=3, expert_dims=(16, 8), tower_dims=(8,)),
  "cross_stitch": dict(column_dims=(16, 8), tower_dims=(8,)),
  "dselect_k": dict(n_experts=3, expert_dims=(16, 8), tower_dims=(8,)),  # 3: codes fold
}
NAMES = tuple(SMALL)
PLAIN = dict(norm=None, dropout=0.0)  # the wiring alone: compiles fastest


def make(name, n_tasks, seed=0, **overrides):
  kwargs = {**SMALL[name], "embed_dim": 8, "dropout": 0.2, **overrides}
  return M.build_model(name, CARD, N_NUM, n_tasks, rngs=nnx.Rngs(seed), **kwargs)


def batch(seed=0, n=B):
  rng = np.random.default_rng(seed)
  cat = np.stack([rng.integers(0, c, n) for c in CARD], axis=1).astype(np.int32)
  return jnp.asarray(cat), jnp.asarray(rng.normal(size=(n, N_NUM)), jnp.float32)


def labels(k, seed=2, n=B):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (n, k)), jnp.float32)


def task_grads(model, cat, num, y):
  """Per-task gradients of the mean binary cross-entropy, stacked on a leading task axis."""
  graphdef, params, rest = M.split(model)

  @jax.jit
  def grads(params, rest, cat, num, y):
    def losses(p):
      logits, _ = M.apply(graphdef, p, rest, cat, num)
      return optax.sigmoid_binary_cross_entropy(logits, y).mean(0)

    loss, vjp = jax.vjp(losses, params)
    return jax.vmap(vjp)(jnp.eye(loss.shape[0], dtype=loss.dtype))[0]

  return grads(params, rest, cat, num, y)


def tasks_reaching(grads, k):
  """``[(path keys, set of tasks whose gradient is non-zero there)]`` for every parameter leaf."""
  out = []
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    keys = tuple(getattr(e, "key", getattr(e, "name", getattr(e, "idx", None))) for e in path)
    nonzero = np.any(np.asarray(g).reshape(k, -1) != 0, axis=1)
    out.append((keys, set(np.flatnonzero(nonzero).tolist())))
  return out


def owner(keys):
  """The task a task-specific parameter belongs to: ``towers[k]``, ``gates[k]``, ``tasks[k]``."""
  assert keys[0] in ("towers", "gates", "tasks"), keys
  return keys[1]


# --------------------------------------------------------------------------- every new model


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 3])
def test_forward_shape_dtype_finite(name, k):
  model = make(name, k)
  cat, num = batch()
  for mode in (model.train, model.eval):
    mode()
    out = model(cat, num)
    assert out.shape == (B, k) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("name", NAMES)
def test_shared_mask_matches_per_task_gradients(name):
  """A leaf is shared iff more than one task's gradient is non-zero on it (random batch, K=3);
  a task-specific leaf is reached by its own task only."""
  k = 3
  model = make(name, k, **PLAIN)
  mask = model.shared_mask()
  params = nnx.state(model, nnx.Param)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert all(type(leaf) is bool for leaf in jax.tree.leaves(mask))
  reached = tasks_reaching(task_grads(model, *batch(1), labels(k)), k)
  assert len(reached) == len(jax.tree.leaves(mask))
  for (keys, tasks), shared in zip(reached, jax.tree.leaves(mask)):
    if shared:
      assert tasks == set(range(k)), (keys, tasks)  # here every task reaches a shared leaf
    else:
      assert tasks == {owner(keys)}, (keys, tasks)
  assert any(jax.tree.leaves(mask)) == (name != "single_task")


# --------------------------------------------------------------------------- single task


def test_single_task_shares_nothing_and_each_loss_stays_in_its_model():
  k = 3
  model = make("single_task", k, **PLAIN)
  assert not any(jax.tree.leaves(model.shared_mask()))
  for keys, tasks in tasks_reaching(task_grads(model, *batch(3), labels(k, 4)), k):
    assert keys[0] == "tasks" and tasks == {keys[1]}, (keys, tasks)


def _one_model_per_task(model, data):
  """Two steps of equal weighting built as ``pub-optax train`` builds it, but for Adam's eps:
  equal weighting scales each task's gradient by 1/K, which Adam ignores up to its eps; a
  negligible eps makes that exact (1/2 scales floats exactly), so K = 2 tasks compare closely."""
  tx = pub_optax.make_method(
    "equal",
    3e-2,
    num_tasks=model.n_tasks,
    shared=model.shared_mask(),
    inject_learning_rate=True,
    eps=1e-30,
  )
  trainer = Trainer(model, tx)
  params, rest, state = trainer.params, trainer.rest, tx.init(trainer.params)
  for _, batch in zip(range(2), train_batches(data, 64, seed=0, epoch=0)):
    out = trainer.train_step(params, rest, state, batch)
    params, rest, state = out.params, out.rest, out.opt_state
  return params


def tiny_data(k, n=128, seed=5, cardinalities=CARD):
  rng = np.random.default_rng(seed)
  return RankingData(
    categorical=np.stack([rng.integers(0, c, n) for c in cardinalities], axis=1),
    numerical=rng.normal(size=(n, N_NUM)),
    labels=rng.integers(0, 2, (n, k)),
    cardinalities=cardinalities,
    task_names=tuple(f"task{t}" for t in range(k)),
  )


def test_single_task_training_equals_separate_trainings():
  """Equal weighting + Adam on the K-task model = K one-task models trained on their own labels
  (same initial parameters, same batches), up to float32 rounding (steps are 3e-2)."""
  k = 2
  data = tiny_data(k)
  kw = dict(embed_dim=4, bottom_dims=(8,), tower_dims=(4,), norm=None, dropout=0.0)
  joint = M.SingleTask(CARD, N_NUM, k, rngs=nnx.Rngs(0), **kw)
  alone = []
  for t in range(k):
    model = M.SingleTask(CARD, N_NUM, 1, rngs=nnx.Rngs(t + 1), **kw)
    nnx.update(model.tasks[0], nnx.state(joint.tasks[t]))
    task_data = dataclasses.replace(
      data, labels=data.labels[:, t : t + 1], task_names=data.task_names[t : t + 1]
    )
    alone.append(_one_model_per_task(model, task_data)["tasks"][0])
  together = _one_model_per_task(joint, data)["tasks"]
  for t in range(k):
    for a, b in zip(jax.tree.leaves(alone[t]), jax.tree.leaves(together[t])):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- OMoE


def test_omoe_with_one_expert_is_shared_bottom():
  omoe = make("omoe", 2, n_experts=1, expert_dims=(16, 8), norm="batch")
  bottom = M.SharedBottom(
    CARD, N_NUM, 2, embed_dim=8, bottom_dims=(16, 8), tower_dims=(8,), rngs=nnx.Rngs(9)
  )
  nnx.update(bottom.features, nnx.state(omoe.features))
  nnx.update(bottom.bottom, nnx.state(omoe.experts[0]))
  nnx.update(bottom.towers, nnx.state(omoe.towers))
  omoe.eval()
  bottom.eval()
  cat, num = batch(8)
  np.testing.assert_allclose(omoe(cat, num), bottom(cat, num), rtol=1e-6, atol=1e-6)
  assert omoe.shared_mask()["gate"]["logits"]["kernel"].get_value() is True


# --------------------------------------------------------------------------- cross-stitch


def test_cross_stitch_starts_near_identity():
  stitches = make("cross_stitch", 3).stitches
  assert len(stitches) == 2  # one after every hidden layer of the columns
  for stitch in stitches:
    np.testing.assert_allclose(stitch.matrix[...], 0.85 * np.eye(3) + 0.05, rtol=1e-6)
  np.testing.assert_array_equal(make("cross_stitch", 1).stitches[0].matrix[...], [[1.0]])


def test_cross_stitch_with_identity_stitches_is_independent_columns():
  """Task t's gradient vanishes on every other task's column and tower, and on every stitch
  row but its own (which reads the other columns' activations)."""
  k = 3
  model = make("cross_stitch", k, **PLAIN)
  for stitch in model.stitches:
    stitch.matrix[...] = jnp.eye(k)
  grads = task_grads(model, *batch(5), labels(k, 6))
  for keys, tasks in tasks_reaching(grads, k):
    if keys[0] == "columns":
      assert tasks == {keys[2]}, (keys, tasks)  # columns[layer][task]
    elif keys[0] == "towers":
      assert tasks == {keys[1]}, (keys, tasks)
    else:
      assert keys[0] in ("features", "stitches") and tasks == set(range(k)), (keys, tasks)
  for stitch in grads["stitches"].values():
    rows = np.any(np.asarray(stitch["matrix"][...]) != 0, axis=2)  # (task, row)
    np.testing.assert_array_equal(rows, np.eye(k, dtype=bool))


# --------------------------------------------------------------------------- DSelect-k


def test_smooth_step():
  t = jnp.linspace(-1.0, 1.0, 41)
  for gamma in (1.0, 0.5):
    s = M.smooth_step(t, gamma)
    assert float(s.min()) == 0.0 and float(s.max()) == 1.0
    assert bool(jnp.all(jnp.diff(s) >= 0))
    np.testing.assert_allclose(s + M.smooth_step(-t, gamma), 1.0, atol=1e-6)  # symmetric
    edges = jnp.array([-gamma / 2, gamma / 2])
    slopes = jax.vmap(jax.grad(lambda x, g=gamma: M.smooth_step(x, g)))(edges)
    np.testing.assert_allclose(slopes, 0.0, atol=1e-6)  # C1 at the ends


@pytest.mark.parametrize("n_experts", [1, 3, 4, 5])
def test_dselect_selector_weights_sum_to_one_and_saturate_to_one_hot(n_experts):
  gate = M.DSelectGate(6, n_experts, k=2, gamma=1.0, rngs=nnx.Rngs(n_experts))
  x = jax.random.normal(jax.random.key(0), (16, 6))
  selectors = gate.selectors(x)
  assert selectors.shape == (16, 2, n_experts)
  np.testing.assert_allclose(selectors.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(gate.expert_weights(x).sum(-1), 1.0, rtol=1e-6)
  if n_experts > 1:
    assert float(selectors.max()) < 0.9  # soft at the paper's initialisation
  gate.z_logits.kernel[...] *= 1e5  # every smooth-step saturates
  gate.z_logits.bias[...] *= 1e5
  selectors = np.asarray(gate.selectors(x))
  assert set(np.unique(selectors)) <= {0.0, 1.0}
  np.testing.assert_array_equal(selectors.sum(-1), 1.0)
  weights = np.asarray(gate.expert_weights(x))
  assert np.all(np.count_nonzero(weights, axis=-1) <= 2)  # at most k experts


def test_dselect_one_selector_picks_the_expert_of_its_code():
  gate = M.DSelectGate(4, 5, k=1, gamma=1.0, rngs=nnx.Rngs(0))  # 3 bits, codes 5..7 fold
  gate.z_logits.kernel[...] = jnp.zeros_like(gate.z_logits.kernel[...])
  experts = jnp.arange(5.0)[None, :, None] * jnp.ones((2, 5, 1))  # expert e outputs e
  for code, expert in ((0, 0), (3, 3), (4, 4), (6, 1)):
    bits = [(code >> b) & 1 for b in (2, 1, 0)]
    gate.z_logits.bias[...] = jnp.array([1.0 if b else -1.0 for b in bits])
    np.testing.assert_array_equal(gate(jnp.ones((2, 4)), experts), [[expert], [expert]])


def test_bad_construction_raises():
  with pytest.raises(ValueError, match="n_experts must be >= 1"):
    make("omoe", 2, n_experts=0)
  with pytest.raises(ValueError, match="n_experts must be >= 1"):
    make("dselect_k", 2, n_experts=0)
  with pytest.raises(ValueError, match="k >= 1"):
    make("dselect_k", 2, k=0)
  with pytest.raises(ValueError, match="column_dims needs"):
    make("cross_stitch", 2, column_dims=())
  for name in NAMES:
    with pytest.raises(ValueError, match="n_tasks must be"):
      make(name, 0)


# --------------------------------------------------------------------------- row-sparse tables


def _sparse_vs_dense(data, sparse, steps=3):
  model = M.SingleTask(
    data.cardinalities,
    N_NUM,
    2,
    embed_dim=4,
    bottom_dims=(8,),
    tower_dims=(4,),
    norm="layer",
    dropout=0.2,
    rngs=nnx.Rngs(params=0, dropout=1),
  )
  tx = pub_optax.make_method("equal", 3e-2, num_tasks=2, shared=model.shared_mask())
  trainer = Trainer(model, tx, sparse_embeddings=sparse)
  params, rest, state = trainer.params, trainer.rest, tx.init(trainer.params)
  for _, b in zip(range(steps), train_batches(data, 64, seed=0, epoch=0)):
    out = trainer.train_step(params, rest, state, b)
    params, rest, state = out.params, out.rest, out.opt_state
  return params, state


def test_single_task_row_sparse_tables_train_like_dense():
  """Every task's own tables with more ids than the batch has rows are compacted alike (the
  other models run in test_sparse_embeddings.py, which takes every registered model)."""
  model = M.SingleTask(
    (2, 700), 0, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,), rngs=nnx.Rngs(0)
  )
  cat = jnp.array([[1, 650], [0, 3], [1, 650]])
  compact, cbatch, _ = model.embedding_lookups()(M.split(model)[1], {"categorical": cat})
  assert cbatch["categorical"].tolist() == [[1, 1], [0, 0], [1, 1]]
  for t in range(2):
    tables = compact["tasks"][t]["features"]["tables"]
    assert tables[0]["embedding"].shape == (2, 4) and tables[1]["embedding"].shape == (3, 4)
  data = tiny_data(2, n=256, cardinalities=(5, 7, 500))  # tables of 500 ids compact
  dense = _sparse_vs_dense(data, False)
  sparse = _sparse_vs_dense(data, True)
  for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(sparse)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=5e-5)


# --------------------------------------------------------------------------- the command

TINY = ["--rows", "1500", "--batch-size", "256", "--lr", "1e-2", "--epochs", "1", "--seeds", "1"]
TINY += ["--no-progress"]


def _main(argv) -> tuple[int, str, str]:
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    status = cli.main(argv)
  return status, out.getvalue(), err.getvalue()


def test_the_command_offers_every_new_model():
  """``pub-optax train --model NAME`` takes them, with small and paper presets (test_cli.py
  trains every registered model through the command with pub and equal for one epoch; the
  single-task one runs equal only, as below)."""
  for name in NAMES:
    assert name in M.MODEL_NAMES
    assert cli.build_parser().parse_args(["train", "--model", name]).model == name
    small = cli.model_kwargs(name, "small", 0.1)
    assert small["dropout"] == 0.1 and small["embed_dim"] == 16
    assert cli.model_kwargs(name, "paper", 0.1) == {"dropout": 0.1}
    model = M.build_model(name, CARD, N_NUM, 2, rngs=nnx.Rngs(0), **small)
    assert model(*batch()).shape == (B, 2)


def test_single_task_command_drops_balancing_methods_with_a_note(tmp_path):
  out = str(tmp_path / "run")
  argv = ["train", "--model", "single_task", "--methods", "pub,equal,nash_mtl", "--out", out]
  status, stdout, stderr = _main(argv + TINY + ["--lr", "pub=1e-3,equal=2e-2,nash_mtl=1e-3"])
  assert status == 0 and "model single_task (small)" in stdout
  assert "--model single_task shares no parameter" in stderr
  assert "['pub', 'nash_mtl'] would have nothing to balance; running ['equal'] only" in stderr
  report = json.load(open(os.path.join(out, "results.json")))
  assert [r["config"]["method"] for r in report["runs"]] == ["equal"]
  assert report["runs"][0]["config"]["learning_rate"] == 2e-2
  assert np.isfinite(report["runs"][0]["test"]["mean_auc"])


def test_single_task_command_refuses_only_balancing_methods(tmp_path):
  argv = ["train", "--model", "single_task", "--methods", "pub,mgda", "--out", str(tmp_path)]
  status, _, stderr = _main(argv)
  assert status == 2
  assert "method(s) ['pub', 'mgda'] have nothing to balance" in stderr
  usable = [m.strip(",") for m in stderr.split("one of: ")[1].split()]
  assert "--methods equal" in stderr and "rlw" in usable and "pub" not in usable
  assert not os.path.exists(tmp_path / "results.json")


def test_balancing_methods_are_told_apart():
  assert [cli.balances_shared_parameters(m) for m in ("pub", "nash_mtl", "equal", "rlw")] == [
    True,
    True,
    False,
    False,
  ]
