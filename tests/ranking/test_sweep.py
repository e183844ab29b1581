"""The sweep engine reproduces the Trainer member by member, stops members one by one, and
rejects bad grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pub_optax._methods import make_method
from pub_optax.ranking.data import generate_splits
from pub_optax.ranking.experiment import RunConfig, run
from pub_optax.ranking.models import build_model
from pub_optax.ranking.sweep import SweepEngine, sweep
from pub_optax.ranking.train import Trainer, train_batches

pytestmark = pytest.mark.usefixtures("fast_compiles")

TINY = dict(embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,), dropout=0.2)
BATCH = 32
# float32: the vmapped program may round differently from the unvmapped one. Measured after
# 8 steps: 4.1e-6 on the parameters; the member of the other rate is 0.23 away, one Adam step 3e-2.
PARAM_TOL = 5e-5
AUC_TOL = 1e-6  # measured 0: the validation AUCs came out equal


@pytest.fixture(scope="module")
def splits():
  return generate_splits(4 * BATCH, 96, 96, seed=3)


def _config(method: str, **changes) -> RunConfig:
  return RunConfig(model="mmoe", method=method, batch_size=BATCH, model_kwargs=TINY, **changes)


def _trainer_params(data, method: str, seed: int, learning_rate: float, epochs: int):
  """Parameters of a Python-loop Trainer run built as ``experiment.run`` builds it."""
  model = build_model(
    "mmoe", data.cardinalities, data.numerical.shape[1], data.labels.shape[1],
    rngs=nnx.Rngs(params=seed, dropout=seed + 1), **TINY,
  )  # fmt: skip
  tx = make_method(
    method, learning_rate, num_tasks=2, shared=model.shared_mask(), inject_learning_rate=True
  )
  trainer = Trainer(model, tx)
  params, rest, opt_state = trainer.params, trainer.rest, tx.init(trainer.params)
  for epoch in range(epochs):
    for batch in train_batches(data, BATCH, seed, epoch):
      out = trainer.train_step(params, rest, opt_state, batch)
      params, rest, opt_state = out.params, out.rest, out.opt_state
  return params, out.weights


def _max_difference(a, b) -> float:
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.max(jnp.abs(x - y)), a, b))
  return max(float(x) for x in leaves)


def _feeds_batch_norm(path) -> bool:
  """A Linear bias right before a BatchNorm: its exact gradient is zero, so Adam normalises
  float32 rounding noise into an update of up to the learning rate, which no two programs
  reproduce; it does not change the train-mode outputs."""
  keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
  return len(keys) >= 3 and keys[-2] == "bias" and keys[-4] == "layers" and keys[-3] == 0


def _split_differences(a, b) -> tuple[float, float]:
  """Largest difference over ordinary parameters and over biases feeding a BatchNorm."""
  ordinary, before_norm = [0.0], [0.0]
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    (before_norm if _feeds_batch_norm(path) else ordinary).append(float(jnp.max(jnp.abs(x - y))))
  return max(ordinary), max(before_norm)


def test_member_matches_trainer_step_for_step(splits):
  seeds, rates = (0, 1), (1e-3, 3e-2)
  engine = SweepEngine(_config("equal"), splits["train"], seeds, rates)
  state = engine.init()
  for epoch in range(2):
    state = engine.train_epoch(state, splits["train"], epoch)
  member = engine.members.index((1, 3e-2))
  params, weights = _trainer_params(splits["train"], "equal", 1, 3e-2, epochs=2)
  swept = jax.tree.map(lambda leaf: leaf[member], state.params)
  ordinary, before_norm = _split_differences(swept, params)
  print(f"max |sweep - Trainer| after 8 steps: {ordinary:.3g} ({before_norm:.3g} before BatchNorm)")
  assert ordinary <= PARAM_TOL
  assert before_norm <= 8 * 3e-2  # at most one learning rate per Adam step; measured 0.041
  np.testing.assert_allclose(state.weights[member], weights, atol=PARAM_TOL)
  # the other rate of the same seed went elsewhere
  assert _max_difference(jax.tree.map(lambda leaf: leaf[member - 1], state.params), params) > 1e-3


def test_validation_and_test_auc_match_run(splits):
  results = sweep(
    "mmoe", "equal", splits, seeds=(2,), learning_rates=(1e-2, 3e-3), epochs=2,
    batch_size=BATCH, patience=2, model_kwargs=TINY,
  )  # fmt: skip
  reference = run(_config("equal", seed=2, learning_rate=3e-3, epochs=2, patience=2), splits,
                  progress=False)  # fmt: skip
  member = results[1]
  assert member["config"]["learning_rate"] == 3e-3
  swept = [v["mean_auc"] for v in member["val_history"]]
  looped = [v["mean_auc"] for v in reference["val_history"]]
  print(f"max |sweep - run| over validation mean AUC: {np.max(np.abs(np.subtract(swept, looped)))}")
  np.testing.assert_allclose(swept, looped, atol=AUC_TOL)
  assert member["best_epoch"] == reference["best_epoch"]
  # Test mean AUC on 96 rows (one positive per task: 1/190 per swapped pair) differs by 0.0053
  # to 0.0079 (measured): the parameters agree to float32 rounding, amplified by Adam on the
  # biases that feed a BatchNorm. The member of the other rate is 0.047 away: bound 0.02.
  np.testing.assert_allclose(member["test"]["mean_auc"], reference["test"]["mean_auc"], atol=0.02)


def test_stopped_member_is_frozen_while_others_train(splits):
  engine = SweepEngine(_config("equal"), splits["train"], (0,), (1e-2, 1e-2))
  state = engine.init()
  state = state._replace(active=jnp.array([False, True]))
  after = engine.train_epoch(state, splits["train"], 0)
  frozen = jax.tree.map(lambda a, b: a[0] - b[0], after.params, state.params)
  moved = jax.tree.map(lambda a, b: a[1] - b[1], after.params, state.params)
  assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(frozen)) == 0.0
  assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(moved)) > 0.0
  assert bool(jnp.isnan(after.weights[0]).all()) and bool(jnp.isfinite(after.weights[1]).all())


@pytest.mark.parametrize(
  "grid, message",
  [
    (dict(seeds=(), learning_rates=(1e-3,)), "seeds is empty"),
    (dict(seeds=(0,), learning_rates=()), "learning_rates is empty"),
    (dict(seeds=(0,), learning_rates=(1e-3, 0.0)), r"positive and finite, got \[0.0\]"),
    (dict(seeds=(0,), learning_rates=(-1.0,)), r"got \[-1.0\]"),
    (dict(seeds=(0,), learning_rates=(float("nan"),)), r"got \[nan\]"),
    (dict(seeds=(0, -2), learning_rates=(1e-3,)), r"non-negative integers, got \[-2\]"),
    (dict(seeds=(1, 1), learning_rates=(1e-3,)), "seeds repeat"),
    (dict(seeds=(0,), learning_rates=(1e-3,), patience=0), "patience must be"),
  ],
)
def test_bad_grids_are_rejected(splits, grid, message):
  with pytest.raises(ValueError, match=message):
    sweep("mmoe", "equal", splits, batch_size=BATCH, model_kwargs=TINY, **grid)
