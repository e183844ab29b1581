"""The sweep engine reproduces the Trainer member by member, stops members one by one, and
rejects bad grids."""

import contextlib

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
TINY_LN = dict(TINY, norm="layer")
BATCH = 32
# float32: the vmapped program may round differently from the unvmapped one. Measured after
# 8 steps: 1.1e-6 on the parameters; the member of the other rate is 0.23 away, one Adam step 3e-2.
PARAM_TOL = 5e-5
AUC_TOL = 1e-6  # measured 0: the validation AUCs came out equal


@pytest.fixture(scope="module")
def splits():
  """Four categorical fields, not the schema's 16: what the engine does is the same for any
  number of tables, and its programs compile in about half the time."""
  return generate_splits(4 * BATCH, 96, 96, seed=3, n_categorical=4)


def _config(method: str, **changes) -> RunConfig:
  defaults = dict(model="mmoe", method=method, batch_size=BATCH, model_kwargs=TINY)
  return RunConfig(**{**defaults, **changes})


@contextlib.contextmanager
def _fast_compiles():
  """The ``fast_compiles`` fixture for module-scoped fixtures (set up before it)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


def _first_difference(a, b, path="") -> str | None:
  """The path of the first value that differs between two results (NaN equals NaN)."""
  if isinstance(a, dict):
    if a.keys() != b.keys():
      return path
    return next((d for k in a if (d := _first_difference(a[k], b[k], f"{path}/{k}"))), None)
  if isinstance(a, list):
    if len(a) != len(b):
      return path
    return next(
      (d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{path}/{i}"))),
      None,
    )
  same = a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
  return None if same else path


def _trainer_params(data, method: str, seed: int, learning_rate: float, epochs: int):
  """Parameters, model state and task weights of a Python-loop Trainer run built as
  ``experiment.run`` builds it."""
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
  return params, rest, out.weights


def _max_difference(a, b) -> float:
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.max(jnp.abs(x - y)), a, b))
  return max(float(x) for x in leaves)


def _feeds_batch_norm(path) -> bool:
  """A Linear bias right before a BatchNorm: its exact gradient is zero, so Adam normalises
  float32 rounding noise into an update of up to the learning rate, which no two programs
  reproduce; it does not change the train-mode outputs."""
  keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
  return len(keys) >= 3 and keys[-2] == "bias" and keys[-4] == "layers" and keys[-3] == 0


def _state_differences(a, b) -> tuple[float, float]:
  """Largest difference over BatchNorm variances and RNG counters, and over running means."""
  others, means = [0.0], [0.0]
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    is_mean = getattr(path[-2], "key", None) == "mean"
    difference = jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))
    (means if is_mean else others).append(float(difference))
  return max(others), max(means)


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
  params, rest, weights = _trainer_params(splits["train"], "equal", 1, 3e-2, epochs=2)
  swept = jax.tree.map(lambda leaf: leaf[member], state.params)
  ordinary, before_norm = _split_differences(swept, params)
  print(f"max |sweep - Trainer| after 8 steps: {ordinary:.3g} ({before_norm:.3g} before BatchNorm)")
  assert ordinary <= PARAM_TOL
  assert before_norm <= 8 * 3e-2  # at most one learning rate per Adam step; measured 0.12
  np.testing.assert_allclose(state.weights[member], weights, atol=PARAM_TOL)
  # Each member carries its own BatchNorm statistics and dropout counters: the variances and
  # counters agree to float32 rounding (measured 0 and < 1e-6), the running means follow the
  # biases before BatchNorm (measured 0.034), bounded as those; a member whose model state were
  # not carried would keep variances of 1 and counters of 0.
  others, means = _state_differences(jax.tree.map(lambda leaf: leaf[member], state.rest), rest)
  print(f"max |sweep - Trainer| of the model state: {others:.3g} ({means:.3g} running means)")
  assert others <= PARAM_TOL
  assert means <= 8 * 3e-2
  # the other rate of the same seed went elsewhere
  assert _max_difference(jax.tree.map(lambda leaf: leaf[member - 1], state.params), params) > 1e-3


# A grid calibrated by measurement (seed 1 of these splits, patience 1): the validation mean AUC
# of rate 1e-3 peaks at epoch 5, of 1e-2 at epoch 2, of 1e-1 at epoch 1, so the members stop
# after epochs 6, 3 and 2; rate 1e10 makes every prediction non-finite in epoch 1 (1e6 does not).
# LayerNorm instead of BatchNorm: no bias feeds a normalisation that cancels it, whose zero
# gradient Adam would turn into rounding noise of the size of the learning rate.
STOPPING = dict(seeds=(1,), epochs=6, batch_size=BATCH, patience=1, model_kwargs=TINY_LN)
STOPPING_RATES = (1e-3, 1e-2, 1e-1)
DIVERGING_RATE = 1e10


@pytest.fixture(scope="module")
def labelled_splits():
  """Splits whose validation and test rows hold both classes of both tasks (the default rates
  leave no conversion among 96 validation rows, so every validation mean AUC would be NaN)."""
  return generate_splits(
    4 * BATCH, 96, 96, seed=1, click_rate=0.3, conversion_rate=0.3, n_categorical=4
  )


@pytest.fixture(scope="module")
def stopping_grid(labelled_splits):
  """The calibrated grid with the diverging member, the grid without it and one ``run`` per member."""
  with _fast_compiles():
    results = sweep(
      "mmoe",
      "equal",
      labelled_splits,
      learning_rates=STOPPING_RATES + (DIVERGING_RATE,),
      **STOPPING,
    )
    without = sweep("mmoe", "equal", labelled_splits, learning_rates=STOPPING_RATES, **STOPPING)
    references = [
      run(
        _config("equal", seed=1, learning_rate=rate, epochs=6, patience=1, model_kwargs=TINY_LN),
        labelled_splits,
        progress=False,
        on_divergence="record",
      )
      for rate in STOPPING_RATES + (DIVERGING_RATE,)
    ]
  return results, without, references


def test_validation_and_test_metrics_match_run(stopping_grid):
  results, _, references = stopping_grid
  for member, reference in zip(results[:3], references[:3]):
    swept = [v["mean_auc"] for v in member["val_history"]]
    looped = [v["mean_auc"] for v in reference["val_history"]]
    assert np.isfinite(swept).all()
    # Measured: equal validation and test AUCs, test log-losses within 1.8e-8 (float32 rounding
    # of the vmapped program); bounds 1e-6 on AUC, 1e-6 on log-loss.
    np.testing.assert_allclose(swept, looped, rtol=0, atol=AUC_TOL)
    for key, value in reference["test"].items():
      assert np.isfinite(value), key
      np.testing.assert_allclose(member["test"][key], value, rtol=0, atol=1e-6, err_msg=key)


def test_early_stopping_matches_run_member_by_member(stopping_grid):
  results, _, references = stopping_grid
  finite, looped = results[:3], references[:3]
  assert [r["config"]["learning_rate"] for r in finite] == list(STOPPING_RATES)
  # the grid is calibrated: its members stop at different epochs, two before the last
  assert [r["best_epoch"] for r in finite] == [5, 2, 1]
  assert [r["epochs_run"] for r in finite] == [6, 3, 2]
  assert [r["best_epoch"] for r in finite] == [r["best_epoch"] for r in looped]
  assert [r["epochs_run"] for r in finite] == [r["epochs_run"] for r in looped]
  assert [len(r["val_history"]) for r in finite] == [6, 3, 2]
  for member in finite:  # the test metrics are the best epoch's, not the last one's
    best = member["val_history"][member["best_epoch"] - 1]["mean_auc"]
    assert best == member["best_val_mean_auc"] == max(v["mean_auc"] for v in member["val_history"])


def test_diverged_member_is_recorded_and_does_not_touch_the_others(stopping_grid):
  results, without, references = stopping_grid
  diverged, reference = results[3], references[3]
  assert diverged["config"]["learning_rate"] == DIVERGING_RATE
  assert diverged["diverged"] == {"epoch": 1, "reason": "non-finite validation predictions"}
  assert reference["diverged"]["epoch"] == 1  # run records the same epoch
  assert diverged["best_epoch"] == reference["best_epoch"] == -1
  assert diverged["epochs_run"] == reference["epochs_run"] == 0
  assert diverged["val_history"] == [] and np.isnan(diverged["best_val_mean_auc"])
  assert all(np.isnan(v) for v in diverged["test"].values())
  # The others are bit for bit those of the grid without the diverging member.
  for member, alone in zip(results[:3], without):
    assert member["diverged"] is None
    assert _first_difference(member, alone) is None, _first_difference(member, alone)


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
