"""One training run (model × method × seed) with early stopping, history and resumable checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import flax.serialization
import jax
import numpy as np
from flax import nnx

from pub_optax._methods import METHODS, make_method
from pub_optax.ranking.data.types import RankingData
from pub_optax.ranking.models import build_model
from pub_optax.ranking.train import Trainer, train_batches


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines one run; saved beside its results.

  Attributes:
    model: a name from :data:`pub_optax.ranking.models.MODEL_NAMES`.
    method: a name from :func:`pub_optax.method_names`.
    seed: seeds the model initialisation, dropout and the batch order.
    epochs: maximum number of epochs.
    batch_size: training and evaluation batch size.
    learning_rate: the method's learning rate.
    weight_decay: decoupled weight decay, applied once per step.
    patience: stop after this many epochs without a better validation mean AUC.
    model_kwargs: extra model arguments (``embed_dim``, ``dropout``, ...).
    method_kwargs: extra method hyper-parameters.
    log_every: record losses and task weights every this many steps.
    sparse_embeddings: row-sparse embedding gradients (:class:`~pub_optax.ranking.train.Trainer`);
      only for methods with ``METHODS[method].row_sparse``.
  """

  model: str = "mmoe"
  method: str = "pub"
  seed: int = 0
  epochs: int = 3
  batch_size: int = 1024
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  patience: int = 3
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  method_kwargs: dict = dataclasses.field(default_factory=dict)
  log_every: int = 10
  sparse_embeddings: bool = False


def atomic_write_bytes(path: str, blob: bytes) -> None:
  """Writes ``blob`` to ``path`` through a temporary file and ``os.replace``: never half-written."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(blob)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_json(path: str, obj: Any) -> None:
  """JSON version of :func:`atomic_write_bytes` (NaN written as null)."""

  def clean(x):
    if isinstance(x, float) and not np.isfinite(x):
      return None
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
      return clean(x.item())
    return x

  atomic_write_bytes(path, json.dumps(clean(obj), indent=1).encode())


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def tree_to_bytes(tree, extra: dict) -> bytes:
  """Serialises the leaves of ``tree`` (PRNG keys as their raw data) plus JSON-ready ``extra``."""
  leaves = jax.tree.leaves(tree)
  arrays = {
    str(i): np.asarray(jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)
  }
  return flax.serialization.msgpack_serialize({"leaves": arrays, "extra": json.dumps(extra)})


def tree_from_bytes(template, blob: bytes) -> tuple[Any, dict]:
  """Inverse of :func:`tree_to_bytes`; ``template`` gives the tree structure and key types."""
  saved = flax.serialization.msgpack_restore(blob)
  leaves, treedef = jax.tree.flatten(template)
  if len(saved["leaves"]) != len(leaves):
    raise ValueError(
      f"checkpoint holds {len(saved['leaves'])} arrays but this run has {len(leaves)}: "
      "it was written by a different model or method configuration"
    )
  restored = []
  for i, like in enumerate(leaves):
    x = saved["leaves"][str(i)]
    restored.append(
      jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
      if _is_key(like)
      else jax.numpy.asarray(x, like.dtype)
    )
  return jax.tree.unflatten(treedef, restored), json.loads(saved["extra"])


class _Progress:
  """A one-line progress bar per epoch on stderr with the running task losses."""

  def __init__(self, label: str, total: int, task_names, enabled: bool):
    self.label, self.total, self.task_names, self.enabled = label, total, task_names, enabled
    self.start = time.time()

  def show(self, done: int, losses: np.ndarray, final: bool = False):
    if not self.enabled:
      return
    width = 24
    filled = int(width * done / max(self.total, 1))
    text = " ".join(f"{n} {l:.4f}" for n, l in zip(self.task_names, losses))
    rate = done / max(time.time() - self.start, 1e-9)
    sys.stderr.write(
      f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
      f"{text} ({rate:.1f} it/s)"
    )
    if final:
      sys.stderr.write("\n")
    sys.stderr.flush()


# Compiled steps per configuration without the seed and the learning rate: seeds only change
# the initial parameters and the rate lives in the optimizer state (inject_learning_rate), so
# every seed and every rate of a sweep after the first reuses the compiled train and eval steps.
_COMPILED: dict = {}


def _make_trainer(config: RunConfig, data: RankingData) -> Trainer:
  if config.sparse_embeddings and not METHODS[config.method].row_sparse:
    raise ValueError(
      f"method {config.method!r} does not take row-sparse embedding gradients; "
      f"those that do: {', '.join(n for n, i in METHODS.items() if i.row_sparse)}"
    )
  model = build_model(
    config.model,
    data.cardinalities,
    data.numerical.shape[1],
    data.labels.shape[1],
    rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1),
    **config.model_kwargs,
  )
  tx = make_method(
    config.method,
    config.learning_rate,
    num_tasks=data.labels.shape[1],
    shared=model.shared_mask(),
    weight_decay=config.weight_decay,
    inject_learning_rate=True,
    **config.method_kwargs,
  )
  trainer = Trainer(
    model,
    tx,
    calibration_weight=0.6 if config.model == "aitm" else 0.0,
    sparse_embeddings=config.sparse_embeddings,
  )
  general = dataclasses.replace(
    config, seed=0, learning_rate=0.0, epochs=0, patience=0, log_every=0
  )
  key = json.dumps(
    [
      dataclasses.asdict(general),
      data.cardinalities,
      data.numerical.shape[1],
      data.labels.shape[1],
    ],
    sort_keys=True,
    default=str,
  )
  # trainer.tx stays this run's (its init holds this run's rate); the steps read the rate from the state.
  if key in _COMPILED:
    trainer.train_step, trainer.eval_step = _COMPILED[key]
  else:
    _COMPILED[key] = (trainer.train_step, trainer.eval_step)
  return trainer


def run(
  config: RunConfig,
  splits: dict[str, RankingData],
  *,
  checkpoint: str | None = None,
  progress: bool = True,
) -> dict:
  """Trains on ``splits["train"]``, early-stops on ``splits["val"]``, reports ``splits["test"]``.

  Args:
    config: the run.
    splits: ``{"train", "val", "test"}`` data with shared cardinalities.
    checkpoint: path of a checkpoint file; written atomically after every epoch and
      resumed from when it exists (an interrupted run continues where it stopped).
    progress: show a progress bar per epoch on stderr.

  Returns:
    A JSON-ready dict: the configuration, the test metrics of the best epoch, the
    validation history, and the sampled training losses, task weights and RMS of
    the applied shared update.
  """
  trainer = _make_trainer(config, splits["train"])
  opt_state = trainer.tx.init(trainer.params)
  state = {
    "params": trainer.params,
    "rest": trainer.rest,
    "opt_state": opt_state,
    "best_params": trainer.params,
    "best_rest": trainer.rest,
  }
  progress_info = {
    "epoch": 0,
    "best_val": -1.0,
    "best_epoch": -1,
    "bad_epochs": 0,
    "steps": 0,
    "val_history": [],
    "log": [],
  }
  if checkpoint and os.path.exists(checkpoint):
    with open(checkpoint, "rb") as f:
      state, progress_info = tree_from_bytes(state, f.read())

  task_names = splits["train"].task_names
  while progress_info["epoch"] < config.epochs and progress_info["bad_epochs"] < config.patience:
    epoch = progress_info["epoch"]
    n_batches = max(len(splits["train"]) // config.batch_size, 1)
    bar = _Progress(
      f"{config.method} seed {config.seed} epoch {epoch + 1}/{config.epochs}",
      n_batches,
      task_names,
      progress,
    )
    running = np.zeros(len(task_names))
    params, rest, opt_state = state["params"], state["rest"], state["opt_state"]
    t0 = time.time()
    for i, batch in enumerate(
      train_batches(splits["train"], config.batch_size, config.seed, epoch)
    ):
      out = trainer.train_step(params, rest, opt_state, batch)
      params, rest, opt_state = out.params, out.rest, out.opt_state
      if i % config.log_every == 0 or i == n_batches - 1:
        losses = np.asarray(out.losses)
        if not np.all(np.isfinite(losses)):
          raise FloatingPointError(
            f"{config.method}: non-finite task losses {losses} at epoch {epoch + 1}, step {i}"
          )
        running = losses if i == 0 else 0.9 * running + 0.1 * losses
        progress_info["log"].append(
          {
            "step": progress_info["steps"] + i,
            "losses": losses.tolist(),
            "weights": np.asarray(out.weights).tolist(),
            "shared_update_rms": float(out.shared_update_rms),
          }
        )
        bar.show(i + 1, running)
    jax.block_until_ready(params)
    bar.show(n_batches, running, final=True)
    progress_info["steps"] += n_batches
    val = trainer.evaluate(params, rest, splits["val"], config.batch_size)
    val["epoch"] = epoch + 1
    val["train_seconds"] = time.time() - t0
    progress_info["val_history"].append(val)
    state.update(params=params, rest=rest, opt_state=opt_state)
    if val["mean_auc"] > progress_info["best_val"]:
      progress_info.update(best_val=val["mean_auc"], best_epoch=epoch + 1, bad_epochs=0)
      state.update(best_params=params, best_rest=rest)
    else:
      progress_info["bad_epochs"] += 1
    progress_info["epoch"] = epoch + 1
    if checkpoint:
      atomic_write_bytes(checkpoint, tree_to_bytes(state, progress_info))

  test = trainer.evaluate(
    state["best_params"], state["best_rest"], splits["test"], config.batch_size
  )
  return {
    "config": dataclasses.asdict(config),
    "test": test,
    "best_epoch": progress_info["best_epoch"],
    "epochs_run": progress_info["epoch"],
    "val_history": progress_info["val_history"],
    "log": progress_info["log"],
  }
