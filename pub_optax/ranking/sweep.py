"""A sweep engine: one jitted program trains a grid of seeds × learning rates of one model.

Every member of the grid is one copy of the model, initialised from its seed exactly as
:func:`pub_optax.ranking.experiment.run` initialises it, with its own optimizer state (the
learning rate is injected into the state, so one compiled step serves every rate) and its
own dropout RNG. One epoch is one call of a jitted program: ``jax.lax.scan`` over the
epoch's batches, resident on the device, of ``jax.vmap`` of the train step over members.

Batch order: member ``(seed, learning_rate)`` sees the batches of
``train_batches(data, batch_size, seed, epoch)``, the order of a
:class:`~pub_optax.ranking.train.Trainer` run with that seed, so each member reproduces
that run step for step (up to float32 rounding of the vmapped program). Members of one seed
share that order.

Early stopping is per member, on the validation mean AUC (exact, on the host) with
``patience``; a member that stopped keeps its best parameters and its later updates are
masked, so the program keeps one shape until every member has stopped.

:func:`sweep` trains a grid and returns one result per member; :func:`run_seeds` is
:func:`~pub_optax.ranking.experiment.run` for several seeds of one configuration (the
``pub-optax train`` default), with ``run``'s sampled log, divergence records and a resumable
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pub_optax._methods import make_method
from pub_optax._training import make_train_step
from pub_optax.ranking.data.types import RankingData
from pub_optax.ranking.experiment import (
  RunConfig,
  _Progress,
  data_fingerprint,
  load_checkpoint,
  new_progress,
  record_validation,
  run_settings,
  save_checkpoint,
)
from pub_optax.ranking.metrics import task_metrics
from pub_optax.ranking.models import apply, build_model, split
from pub_optax.ranking.models import model_kwargs as preset_model_kwargs
from pub_optax.ranking.train import task_losses, train_batches

__all__ = ["SweepEngine", "SweepState", "run_seeds", "sweep"]

_BATCH_KEYS = ("categorical", "numerical", "labels")
# Compiled programs per grid shape and settings without seeds and rates (SweepEngine._programs).
_PROGRAMS: dict = {}


class SweepState(NamedTuple):
  """The state of every member, each leaf with a leading member axis.

  Attributes:
    params, rest, opt_state: parameters, other model state and optimizer state.
    active: ``(M,)`` booleans; inactive members are no longer updated.
    weights: ``(M, K)`` task weights applied at each member's last update.
  """

  params: Any
  rest: Any
  opt_state: Any
  active: jax.Array
  weights: jax.Array


def _stack(trees: list) -> Any:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _member(tree, index: int) -> Any:
  return jax.tree.map(lambda leaf: leaf[index], tree)


def _keep_active(active: jax.Array, new, old) -> Any:
  """``new`` for active members, ``old`` for the others, leaf by leaf."""

  def select(a, b):
    return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)

  return jax.tree.map(select, new, old)


def _check_grid(seeds, learning_rates, epochs: int, batch_size: int, patience: int) -> None:
  if not seeds:
    raise ValueError("sweep: seeds is empty; give at least one seed")
  if not learning_rates:
    raise ValueError("sweep: learning_rates is empty; give at least one rate")
  bad_seeds = [s for s in seeds if int(s) != s or s < 0]
  if bad_seeds:
    raise ValueError(f"sweep: seeds must be non-negative integers, got {bad_seeds}")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"sweep: seeds repeat: {list(seeds)}")
  bad_rates = [r for r in learning_rates if not (np.isfinite(r) and r > 0)]
  if bad_rates:
    raise ValueError(f"sweep: learning rates must be positive and finite, got {bad_rates}")
  for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
    if int(value) != value or value < 1:
      raise ValueError(f"sweep: {name} must be a positive integer, got {value!r}")


def _padded_eval_batches(data: RankingData, batch_size: int) -> dict[str, jax.Array]:
  """Every row of ``data`` as ``(num_batches, batch_size, ...)`` arrays, zero-padded at the end."""
  n_batches = max(-(-len(data) // batch_size), 1)
  out = {}
  for key in _BATCH_KEYS:
    array = getattr(data, key)
    padded = np.zeros((n_batches * batch_size, *array.shape[1:]), array.dtype)
    padded[: len(array)] = array
    out[key] = jnp.asarray(padded.reshape(n_batches, batch_size, *array.shape[1:]))
  return out


@dataclasses.dataclass
class SweepEngine:
  """The compiled programs and initial states of one grid of one model and method.

  Members are ordered seed-major: member ``i * len(learning_rates) + j`` has
  ``seeds[i]`` and ``learning_rates[j]`` (see :attr:`members`).

  Args:
    config: the run settings shared by every member (``seed`` and ``learning_rate`` are
      ignored: they come from the grid); ``sparse_embeddings`` is not supported.
    data: the training split (cardinalities, feature and task counts).
    seeds: member seeds (model initialisation, dropout, batch order).
    learning_rates: member learning rates.

  Example:
    >>> from pub_optax.ranking.data import generate_splits
    >>> splits = generate_splits(64, 32, 32, seed=0)
    >>> config = RunConfig(model="mmoe", method="equal", batch_size=32,
    ...                    model_kwargs=dict(embed_dim=4, n_experts=2, expert_dims=(8,),
    ...                                      tower_dims=(4,)))
    >>> engine = SweepEngine(config, splits["train"], seeds=(0, 1), learning_rates=(1e-3,))
    >>> state = engine.train_epoch(engine.init(), splits["train"], epoch=0)
    >>> state.weights.shape, engine.members
    ((2, 2), [(0, 0.001), (1, 0.001)])
  """

  config: RunConfig
  data: RankingData
  seeds: tuple
  learning_rates: tuple

  def __post_init__(self):
    if self.config.sparse_embeddings:
      raise ValueError("sweep: sparse_embeddings is not supported; use dense embeddings")
    self.seeds, self.learning_rates = tuple(self.seeds), tuple(self.learning_rates)
    self.members = [(s, lr) for s in self.seeds for lr in self.learning_rates]
    self.member_seed_index = jnp.asarray(
      [i for i in range(len(self.seeds)) for _ in self.learning_rates], jnp.int32
    )
    models = {seed: self._build_model(seed) for seed in self.seeds}
    first = models[self.seeds[0]]
    self.train_graph, _, _ = split(first)
    first.eval()
    self.eval_graph, _, _ = split(first)
    first.train()
    self.shared_mask = first.shared_mask()
    self.calibration_weight = 0.6 if self.config.model == "aitm" else 0.0
    self._initial = [split(models[s])[1:] for s, _ in self.members]
    self.tx = self._method(self.learning_rates[0])
    step = make_train_step(self.tx, self.shared_mask, self._losses)
    self._step = jax.vmap(step)
    self.train_epoch_program, self.predict_program = self._programs()

  def _programs(self):
    """The jitted epoch and prediction programs, shared by every engine of the same settings
    but seeds and rates: seeds only change the initial states and the rates live in the
    optimizer states (``inject_learning_rate``), so a later grid reuses the compiled programs."""
    general = dataclasses.replace(
      self.config, seed=0, learning_rate=0.0, epochs=0, patience=0, log_every=0
    )
    data = self.data
    key = json.dumps(
      [
        dataclasses.asdict(general),
        data.cardinalities,
        data.numerical.shape[1],
        data.labels.shape[1],
        len(self.seeds),
        len(self.learning_rates),
      ],
      sort_keys=True,
      default=str,
    )
    if key not in _PROGRAMS:
      _PROGRAMS[key] = (jax.jit(self._train_epoch), jax.jit(self._predict))
    return _PROGRAMS[key]

  def _build_model(self, seed: int) -> nnx.Module:
    data = self.data
    model = build_model(
      self.config.model,
      data.cardinalities,
      data.numerical.shape[1],
      data.labels.shape[1],
      rngs=nnx.Rngs(params=seed, dropout=seed + 1),
      **self.config.model_kwargs,
    )
    model.train()
    return model

  def _method(self, learning_rate: float):
    return make_method(
      self.config.method,
      learning_rate,
      num_tasks=self.data.labels.shape[1],
      shared=self.shared_mask,
      weight_decay=self.config.weight_decay,
      inject_learning_rate=True,
      **self.config.method_kwargs,
    )

  def init(self) -> SweepState:
    """Every member's initial parameters, model state and optimizer state, stacked."""
    params = [p for p, _ in self._initial]
    opt_states = [self._method(lr).init(p) for p, (_, lr) in zip(params, self.members)]
    n_members, n_tasks = len(self.members), self.data.labels.shape[1]
    return SweepState(
      params=_stack(params),
      rest=_stack([r for _, r in self._initial]),
      opt_state=_stack(opt_states),
      active=jnp.ones((n_members,), bool),
      weights=jnp.full((n_members, n_tasks), jnp.nan, jnp.float32),
    )

  def _losses(self, params, rest, batch):
    logits, new_rest = apply(
      self.train_graph, params, rest, batch["categorical"], batch["numerical"]
    )
    return task_losses(logits, batch["labels"], self.calibration_weight), new_rest

  def _train_epoch(self, state: SweepState, batches: dict, member_seed_index: jax.Array):
    def body(carry: SweepState, seed_batches):
      batch = jax.tree.map(lambda x: x[member_seed_index], seed_batches)
      out = self._step(carry.params, carry.rest, carry.opt_state, batch)
      new = (out.params, out.rest, out.opt_state, out.weights)
      old = (carry.params, carry.rest, carry.opt_state, carry.weights)
      params, rest, opt_state, weights = _keep_active(carry.active, new, old)
      step_log = (out.losses, out.weights, out.shared_update_rms)
      return SweepState(params, rest, opt_state, carry.active, weights), step_log

    return jax.lax.scan(body, state, batches)

  def epoch_batches_count(self, data: RankingData) -> int:
    """Training steps per epoch (the batches of :func:`~pub_optax.ranking.train.train_batches`)."""
    return max(len(data) // self.config.batch_size, 1)

  def epoch_batches(self, data: RankingData, epoch: int) -> dict[str, jax.Array]:
    """The epoch's batches of every seed, ``(num_batches, num_seeds, batch, ...)`` on the device."""
    per_seed = [
      list(train_batches(data, self.config.batch_size, seed, epoch)) for seed in self.seeds
    ]
    return {
      key: jnp.asarray(np.stack([np.stack([b[key] for b in seed]) for seed in per_seed], axis=1))
      for key in _BATCH_KEYS
    }

  def train_epoch(self, state: SweepState, data: RankingData, epoch: int) -> SweepState:
    """One epoch of every active member (inactive ones are carried unchanged)."""
    return self.train_epoch_logged(state, data, epoch)[0]

  def train_epoch_logged(self, state: SweepState, data: RankingData, epoch: int):
    """:meth:`train_epoch`, also returning every step's task losses ``(S, M, K)``, task
    weights ``(S, M, K)`` and RMS of the applied shared update ``(S, M)``, as NumPy arrays."""
    state, step_log = self.train_epoch_program(
      state, self.epoch_batches(data, epoch), self.member_seed_index
    )
    return state, tuple(np.asarray(x) for x in step_log)

  def _predict(self, params, rest, batches: dict) -> jax.Array:
    def forward(p, r, batch):
      return apply(self.eval_graph, p, r, batch["categorical"], batch["numerical"])[0]

    def body(_, batch):
      return None, jax.vmap(forward, in_axes=(0, 0, None))(params, rest, batch)

    return jax.lax.scan(body, None, batches)[1]

  def predict(self, params, rest, data: RankingData) -> np.ndarray:
    """``(M, N, K)`` eval-mode logits of every member on every row of ``data``."""
    logits = self.predict_program(params, rest, _padded_eval_batches(data, self.config.batch_size))
    logits = np.asarray(logits).transpose(1, 0, 2, 3)
    return logits.reshape(logits.shape[0], -1, logits.shape[-1])[:, : len(data)]

  def evaluate(self, params, rest, data: RankingData) -> list[dict | None]:
    """Task metrics of every member (``None`` for a member with non-finite predictions)."""
    logits = self.predict(params, rest, data)
    return [
      task_metrics(data.labels, member, data.task_names, on_single_class="nan")
      if np.isfinite(member).all()
      else None
      for member in logits
    ]


def _nan_metrics(data: RankingData) -> dict:
  names = data.task_names
  keys = [f"{t}_auc" for t in names] + [f"{t}_logloss" for t in names]
  return {key: float("nan") for key in keys + ["mean_auc", "mean_logloss"]}


@dataclasses.dataclass
class _MemberProgress:
  """Early-stopping bookkeeping of one member, as in :func:`~pub_optax.ranking.experiment.run`."""

  best_val: float = float("-inf")
  best_epoch: int = -1
  bad_epochs: int = 0
  epochs_run: int = 0
  diverged: dict | None = None
  val_history: list = dataclasses.field(default_factory=list)

  def record(self, val: dict | None, epoch: int) -> bool:
    """Records epoch ``epoch``'s metrics (``None``: diverged); returns whether it is the best."""
    if val is None:
      self.diverged = {"epoch": epoch, "reason": "non-finite validation predictions"}
      return False
    self.epochs_run = epoch
    self.val_history.append({**val, "epoch": epoch})
    better = self.best_epoch < 0 or (
      np.isfinite(val["mean_auc"]) and val["mean_auc"] > self.best_val
    )
    if better:
      self.best_val, self.best_epoch, self.bad_epochs = val["mean_auc"], epoch, 0
    else:
      self.bad_epochs += 1
    return better

  def active(self, patience: int) -> bool:
    return self.diverged is None and self.bad_epochs < patience


def _train_grid(engine: SweepEngine, splits: dict, epochs: int, patience: int):
  """Trains every member with early stopping; returns the final state, best state and progress."""
  state = engine.init()
  best = (state.params, state.rest)
  progress = [_MemberProgress() for _ in engine.members]
  for epoch in range(epochs):
    state = engine.train_epoch(state, splits["train"], epoch)
    vals = engine.evaluate(state.params, state.rest, splits["val"])
    was_active = np.asarray(state.active)
    improved = np.array(
      [bool(a) and p.record(v, epoch + 1) for a, p, v in zip(was_active, progress, vals)]
    )
    best = _keep_active(jnp.asarray(improved), (state.params, state.rest), best)
    active = np.array([p.active(patience) for p in progress]) & was_active
    state = state._replace(active=jnp.asarray(active))
    if not active.any():
      break
  return state, best, progress


def _member_result(config, member, progress: _MemberProgress, test: dict, weights) -> dict:
  seed, learning_rate = member
  return {
    "config": dataclasses.asdict(
      dataclasses.replace(config, seed=int(seed), learning_rate=float(learning_rate))
    ),
    "test": test,
    "best_epoch": progress.best_epoch,
    "best_val_mean_auc": progress.best_val if progress.best_epoch > 0 else float("nan"),
    "epochs_run": progress.epochs_run,
    "val_history": progress.val_history,
    "weights": np.asarray(weights).tolist(),
    "diverged": progress.diverged,
  }


def sweep(
  model: str,
  method: str,
  splits: dict[str, RankingData],
  *,
  seeds,
  learning_rates,
  epochs: int = 3,
  batch_size: int = 1024,
  patience: int = 3,
  weight_decay: float = 0.0,
  preset: str = "small",
  dropout: float = 0.2,
  model_kwargs: dict | None = None,
  **method_kwargs,
) -> list[dict]:
  """Trains every (seed, learning rate) member of one model and method in one jitted program.

  Each member is the run :func:`~pub_optax.ranking.experiment.run` makes of
  ``RunConfig(model, method, seed, epochs, batch_size, learning_rate, ...)``: the same
  initialisation, batch order, steps, early stopping on the validation mean AUC and test
  metrics at the best epoch, up to float32 rounding of the vmapped program.

  Args:
    model: a name from :data:`pub_optax.ranking.models.MODEL_NAMES`.
    method: a name from :func:`pub_optax.method_names`.
    splits: ``{"train", "val", "test"}`` data with shared cardinalities.
    seeds: distinct non-negative integer seeds.
    learning_rates: positive learning rates.
    epochs: maximum number of epochs.
    batch_size: training and evaluation batch size.
    patience: a member stops after this many epochs without a better validation mean AUC.
    weight_decay: decoupled weight decay.
    preset: model size, ``"small"`` or ``"paper"`` (as the command's ``--preset``).
    dropout: dropout rate (as the command's ``--dropout``).
    model_kwargs: model arguments replacing those of ``preset`` and ``dropout``.
    **method_kwargs: the method's hyper-parameters.

  Returns:
    One dict per member, seed-major (all rates of ``seeds[0]`` first): ``"config"`` (its
    :class:`~pub_optax.ranking.experiment.RunConfig` as a dict), ``"test"`` (test metrics at
    the best epoch, NaN when none finished), ``"best_epoch"``, ``"best_val_mean_auc"``,
    ``"epochs_run"``, ``"val_history"``, ``"weights"`` (task weights of the last update) and
    ``"diverged"`` (``None``, or the epoch whose validation predictions were not finite).

  Raises:
    ValueError: an empty grid, a repeated or negative seed, a rate that is not positive,
      or a non-positive ``epochs``, ``batch_size`` or ``patience``.

  Example (about half a minute on two CPU cores, mostly compilation)::

    >>> from pub_optax.ranking.data import generate_splits
    >>> splits = generate_splits(128, 64, 64, seed=0)
    >>> results = sweep("mmoe", "equal", splits, seeds=(0, 1), learning_rates=(1e-3, 1e-2),
    ...                 epochs=2, batch_size=64, patience=1,
    ...                 model_kwargs=dict(embed_dim=4, n_experts=2, expert_dims=(8,),
    ...                                   tower_dims=(4,)))  # doctest: +SKIP
    >>> [(r["config"]["seed"], r["config"]["learning_rate"]) for r in results]  # doctest: +SKIP
    [(0, 0.001), (0, 0.01), (1, 0.001), (1, 0.01)]
    >>> sorted(results[0]["test"])[:2], len(results[0]["weights"])  # doctest: +SKIP
    (['ctcvr_auc', 'ctcvr_logloss'], 2)
  """
  _check_grid(seeds, learning_rates, epochs, batch_size, patience)
  if model_kwargs is None:
    model_kwargs = preset_model_kwargs(model, preset, dropout)
  config = RunConfig(
    model=model,
    method=method,
    epochs=epochs,
    batch_size=batch_size,
    weight_decay=weight_decay,
    patience=patience,
    model_kwargs=dict(model_kwargs),
    method_kwargs=dict(method_kwargs),
  )
  engine = SweepEngine(
    config, splits["train"], tuple(seeds), tuple(float(r) for r in learning_rates)
  )
  state, best, progress = _train_grid(engine, splits, epochs, patience)
  tests = engine.evaluate(*best, splits["test"])
  return [
    _member_result(
      config,
      member,
      p,
      test if (p.best_epoch > 0 and test is not None) else _nan_metrics(splits["test"]),
      state.weights[i],
    )
    for i, (member, p, test) in enumerate(zip(engine.members, progress, tests))
  ]


# The sweep path of experiment.run: the seeds of one configuration as the members of one grid,
# with run's bookkeeping per member (sampled log, divergence, early stopping, checkpoints), so
# each member's result has the keys and meaning of run's result for that seed.


def _new_member() -> dict:
  """A member's progress: the ``info`` of :func:`~pub_optax.ranking.experiment.run` and
  ``diverged`` (``None``, or the epoch, step and reason)."""
  return {**new_progress(), "diverged": None}


def _continues(info: dict, config: RunConfig) -> bool:
  """Whether a member trains another epoch: ``run``'s loop condition, and not diverged."""
  return (
    info["diverged"] is None
    and info["epoch"] < config.epochs
    and info["bad_epochs"] < config.patience
  )


def _finite_members(tree, n_members: int) -> np.ndarray:
  """``(M,)``: whether every value of each member's slice of ``tree`` is finite."""
  finite = np.ones(n_members, bool)
  for leaf in jax.tree.leaves(tree):
    finite &= np.isfinite(np.asarray(leaf).reshape(n_members, -1)).all(axis=1)
  return finite


def _record_steps(info: dict, step_log, params_finite: bool, epoch: int, log_every: int) -> None:
  """Logs one member's sampled steps of an epoch as ``run`` does, and records divergence:
  non-finite losses at a sampled step, or non-finite parameters at the end of the epoch."""
  losses, weights, rms = step_log
  n_steps = len(losses)
  for i in range(n_steps):
    if i % log_every and i != n_steps - 1:
      continue
    step = info["steps"] + i
    if not np.all(np.isfinite(losses[i])):
      reason = f"non-finite task losses {losses[i].tolist()}"
      info["diverged"] = {"epoch": epoch + 1, "step": step, "reason": reason}
      return
    info["log"].append(
      {
        "step": step,
        "losses": losses[i].tolist(),
        "weights": weights[i].tolist(),
        "shared_update_rms": float(rms[i]),
      }
    )
  if not params_finite:
    step = info["steps"] + n_steps - 1
    info["diverged"] = {"epoch": epoch + 1, "step": step, "reason": "non-finite parameters"}
    return
  info["steps"] += n_steps


def _record_validation(info: dict, val: dict | None, seconds: float) -> bool:
  """Records one member's validation metrics as ``run`` does; returns whether the epoch is its
  best so far (``None``, non-finite predictions, is recorded as divergence)."""
  if val is None:
    reason = "non-finite validation predictions"
    info["diverged"] = {"epoch": info["epoch"] + 1, "step": info["steps"] - 1, "reason": reason}
    return False
  return record_validation(info, val, seconds)


def _train_members(engine, config, splits, current, infos, active, show_progress):
  """One epoch of the ``active`` members; logs their steps; returns the trained state."""
  epoch = next(info["epoch"] for info, a in zip(infos, active) if a)
  n_members = len(engine.members)
  seeds = ", ".join(str(s) for s in engine.seeds)
  label = f"{config.method} seeds {seeds} epoch {epoch + 1}/{config.epochs}"
  task_names = splits["train"].task_names
  state = SweepState(
    current["params"],
    current["rest"],
    current["opt_state"],
    jnp.asarray(active),
    jnp.full((n_members, len(task_names)), jnp.nan, jnp.float32),
  )
  n_steps = engine.epoch_batches_count(splits["train"])
  bar = _Progress(label, n_steps, task_names, show_progress)
  state, step_log = engine.train_epoch_logged(state, splits["train"], epoch)
  finite = _finite_members(state.params, n_members)
  for m in np.flatnonzero(active):
    member_log = tuple(x[:, m] for x in step_log)
    _record_steps(infos[m], member_log, bool(finite[m]), epoch, config.log_every)
  bar.show(n_steps, np.nanmean(step_log[0][:, active], axis=(0, 1)), final=True)
  return state


def _sweep_epoch(engine, config, splits, current, best, infos, show_progress, on_epoch):
  """Trains and validates one epoch of every member that continues; returns ``(current, best)``."""
  t0 = time.time()
  active = np.array([_continues(info, config) for info in infos])
  state = _train_members(engine, config, splits, current, infos, active, show_progress)
  vals = engine.evaluate(state.params, state.rest, splits["val"])
  improved = np.zeros(len(infos), bool)
  for m in np.flatnonzero(active):
    info = infos[m]
    if info["diverged"] is not None:
      continue
    improved[m] = _record_validation(info, vals[m], time.time() - t0)
    if on_epoch and info["diverged"] is None:
      on_epoch(engine.members[m][0], {**vals[m], "best": info["best_epoch"] == info["epoch"]})
  current = {"params": state.params, "rest": state.rest, "opt_state": state.opt_state}
  trained = {"params": state.params, "rest": state.rest}
  return current, _keep_active(jnp.asarray(improved), trained, best)


def _seed_result(config: RunConfig, seed: int, info: dict, test: dict | None, data) -> dict:
  """A member's result with the keys of :func:`~pub_optax.ranking.experiment.run`'s."""
  finished = info["best_epoch"] > 0 and test is not None
  return {
    "config": dataclasses.asdict(dataclasses.replace(config, seed=int(seed))),
    "test": test if finished else _nan_metrics(data),
    "best_epoch": info["best_epoch"],
    "epochs_run": info["epoch"],
    "val_history": info["val_history"],
    "log": info["log"],
    "diverged": info["diverged"],
  }


def run_seeds(
  config: RunConfig,
  splits: dict[str, RankingData],
  seeds,
  *,
  checkpoint: str | None = None,
  progress: bool = True,
  on_epoch: Callable[[int, dict], None] | None = None,
) -> list[dict]:
  """:func:`~pub_optax.ranking.experiment.run` of ``config`` for every seed, in one sweep grid.

  The seeds are the members of one :class:`SweepEngine` at ``config.learning_rate``: each
  reproduces ``run`` with that seed up to float32 rounding of the vmapped program, with
  ``run``'s early stopping, sampled log (every ``config.log_every`` steps) and divergence
  checks (non-finite sampled losses or parameters, recorded as with
  ``on_divergence="record"``; the other members train on).

  Args:
    config: the run settings (``seed`` is ignored); ``sparse_embeddings`` is not supported.
    splits: ``{"train", "val", "test"}`` data with shared cardinalities.
    seeds: distinct non-negative integer seeds.
    checkpoint: path of one checkpoint file for every member, written atomically after every
      epoch and resumed from when it exists: the settings and seeds, a fingerprint of the
      data, the stacked last and best states (see
      :func:`~pub_optax.ranking.experiment.checkpoint_to_bytes`) and every member's progress.
    progress: one progress line per epoch on stderr.
    on_epoch: called after every epoch of every member that trained it, with the member's
      seed and its validation metrics, ``"epoch"`` and ``"best"``.

  Returns:
    One result per seed, in the order of ``seeds``, with the keys of ``run``'s result.

  Raises:
    CheckpointError: the checkpoint is unreadable, or was written with other settings or
      seeds (other than a larger ``epochs``) or for other data.
    ValueError: an empty, repeated or negative seed, or a bad grid setting.
  """
  _check_grid(
    tuple(seeds), (config.learning_rate,), config.epochs, config.batch_size, config.patience
  )
  engine = SweepEngine(config, splits["train"], tuple(seeds), (config.learning_rate,))
  start = engine.init()
  initial = {"params": start.params, "rest": start.rest, "opt_state": start.opt_state}
  current, best = initial, {"params": start.params, "rest": start.rest}
  infos = [_new_member() for _ in engine.members]
  settings = {**run_settings(config), "seed": [int(s) for s in engine.seeds]}
  fingerprint = data_fingerprint(splits)
  if checkpoint and os.path.exists(checkpoint):
    current, best, infos = load_checkpoint(checkpoint, settings, fingerprint, initial)
  while any(_continues(info, config) for info in infos):
    current, best = _sweep_epoch(engine, config, splits, current, best, infos, progress, on_epoch)
    if checkpoint:
      state = {"current": current, "best": best, "initial": initial}
      save_checkpoint(checkpoint, state, settings, fingerprint, infos)
  tests = engine.evaluate(best["params"], best["rest"], splits["test"])
  return [
    _seed_result(config, seed, info, test, splits["test"])
    for (seed, _), info, test in zip(engine.members, infos, tests)
  ]
