"""One training run (model × method × seed) with early stopping, history and resumable checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
import zlib
from collections.abc import Callable
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


CHECKPOINT_FORMAT = 2
# Options a resumed run may change: only a longer training budget.
RESUMABLE_CHANGES = ("epochs",)
TEMPORARY_PATTERN = re.compile(r"\.tmp(\d+)(\.png)?$")


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, or that was written by another configuration or data."""


def atomic_write_bytes(path: str, blob: bytes) -> None:
  """Writes ``blob`` to ``path`` through a temporary file and ``os.replace``: never half-written.

  The temporary file is ``{path}.tmp{pid}``; `remove_orphaned_temporaries` deletes those
  left behind by a process killed mid-write.
  """
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


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by someone else
    return True
  return True


def remove_orphaned_temporaries(directory: str) -> list[str]:
  """Deletes the ``*.tmp{pid}`` files of `atomic_write_bytes` whose writer is no longer running.

  Only ``directory`` itself is searched (not its sub-folders), and only names matching
  the temporary pattern of a process other than a live one.

  Args:
    directory: a folder the command writes to (it need not exist).

  Returns:
    The paths removed.
  """
  if not os.path.isdir(directory):
    return []
  removed = []
  for name in sorted(os.listdir(directory)):
    match = TEMPORARY_PATTERN.search(name)
    path = os.path.join(directory, name)
    if match and os.path.isfile(path) and not _process_alive(int(match.group(1))):
      os.remove(path)
      removed.append(path)
  return removed


def data_fingerprint(splits: dict[str, RankingData], sample_rows: int = 4096) -> dict:
  """Shapes, label counts and a hash of evenly spaced rows of every split.

  Cheap for any size of data, and different for other files, another generator seed or
  another validation split: what a checkpoint is compared against before it is resumed.

  Args:
    splits: ``{name: RankingData}``.
    sample_rows: rows hashed per split.

  Returns:
    A JSON-ready dict, equal for equal data.
  """
  out = {}
  for name in sorted(splits):
    data = splits[name]
    rows = np.unique(np.linspace(0, max(len(data) - 1, 0), sample_rows).astype(np.int64))
    rows = rows[rows < len(data)]
    digest = hashlib.sha256()
    for array in (data.categorical, data.numerical, data.labels):
      digest.update(np.ascontiguousarray(array[rows]).tobytes())
    out[name] = {
      "rows": len(data),
      "fields": [data.n_categorical, data.n_numerical],
      "cardinalities": list(data.cardinalities),
      "tasks": list(data.task_names),
      "positives": [int(x) for x in data.labels.sum(axis=0)],
      "sample_sha256": digest.hexdigest()[:16],
    }
  return out


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _bits(x) -> np.ndarray:
  """The raw bits of an array (PRNG keys: their key data) as unsigned integers."""
  array = np.asarray(jax.random.key_data(x) if _is_key(x) else x, order="C")
  return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _xor_leaves(tree, reference) -> dict[str, np.ndarray]:
  """Bits of ``tree`` XOR those of ``reference``: zero wherever the two are equal."""
  leaves, ref_leaves = jax.tree.leaves(tree), jax.tree.leaves(reference)
  return {str(i): _bits(x) ^ _bits(r) for i, (x, r) in enumerate(zip(leaves, ref_leaves))}


def _unxor_leaves(saved: dict, reference, path: str):
  """Inverse of :func:`_xor_leaves` for a ``reference`` of the checkpointed structure."""
  ref_leaves, treedef = jax.tree.flatten(reference)
  if len(saved) != len(ref_leaves):
    raise CheckpointError(
      f"{path}: holds {len(saved)} arrays but this run has {len(ref_leaves)}: "
      "it was written by another model or method"
    )
  restored = []
  for i, like in enumerate(ref_leaves):
    ref = _bits(like)
    bits = saved[str(i)]
    if bits.shape != ref.shape or bits.dtype != ref.dtype:
      raise CheckpointError(
        f"{path}: array {i} has shape {bits.shape} but this run's has {ref.shape}: "
        "it was written by another model or data"
      )
    value = (bits ^ ref).view(
      np.asarray(jax.random.key_data(like) if _is_key(like) else like).dtype
    )
    restored.append(
      jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
      if _is_key(like)
      else jax.numpy.asarray(value)
    )
  return jax.tree.unflatten(treedef, restored)


def checkpoint_to_bytes(current, best, initial, extra: dict) -> bytes:
  """Serialises a training state compactly and losslessly.

  ``current`` (parameters, other model state, optimizer state) is stored as its bits XOR
  those of ``initial``, the same state at initialisation (rebuilt from the seed on resume),
  and ``best`` (the best epoch's parameters and model state) XOR the current ones, then
  compressed: embedding rows no batch touched and a best epoch equal to the last cost
  almost nothing, and restoring gives back every bit.

  Args:
    current: ``{"params", "rest", "opt_state"}``.
    best: ``{"params", "rest"}``.
    initial: ``current`` at initialisation.
    extra: JSON-ready metadata (configuration, data fingerprint, progress).

  Returns:
    The checkpoint's bytes.
  """
  reference_best = {"params": current["params"], "rest": current["rest"]}
  payload = {
    "format": CHECKPOINT_FORMAT,
    "extra": json.dumps(extra),
    "current": _xor_leaves(current, initial),
    "best": _xor_leaves(best, reference_best),
  }
  return zlib.compress(flax.serialization.msgpack_serialize(payload), 1)


def _unpack(blob: bytes, path: str) -> dict:
  try:
    payload = flax.serialization.msgpack_restore(zlib.decompress(blob))
  except (zlib.error, ValueError, TypeError) as err:
    raise CheckpointError(
      f"{path}: not a readable checkpoint (truncated or corrupt: {err}); delete it or rerun "
      "without --resume"
    ) from None
  if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
    raise CheckpointError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
  return payload


def checkpoint_metadata(blob: bytes, path: str) -> dict:
  """The JSON metadata of a checkpoint written by :func:`checkpoint_to_bytes`.

  Raises:
    CheckpointError: the file is truncated, corrupt or of another format (named by ``path``).
  """
  return json.loads(_unpack(blob, path)["extra"])


def checkpoint_from_bytes(blob: bytes, initial, path: str) -> tuple[Any, Any, dict]:
  """Inverse of :func:`checkpoint_to_bytes` given the same ``initial`` state.

  Returns:
    ``(current, best, extra)``.

  Raises:
    CheckpointError: unreadable, or written for arrays of other shapes.
  """
  payload = _unpack(blob, path)
  current = _unxor_leaves(payload["current"], initial, path)
  reference_best = {"params": current["params"], "rest": current["rest"]}
  best = _unxor_leaves(payload["best"], reference_best, path)
  return current, best, json.loads(payload["extra"])


def _stream_is_terminal(stream) -> bool:
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty())


class _Progress:
  """Progress of one epoch on stderr with the running task losses.

  On a terminal: a bar redrawn in place. Otherwise (a log file, a pipe): one line at the
  end of the epoch, so a log holds one readable line per epoch.
  """

  def __init__(self, label: str, total: int, task_names, enabled: bool):
    self.label, self.total, self.task_names, self.enabled = label, total, task_names, enabled
    self.interactive = _stream_is_terminal(sys.stderr)
    self.start = time.time()

  def show(self, done: int, losses: np.ndarray, final: bool = False):
    if not self.enabled or not (self.interactive or final):
      return
    width = 24
    filled = int(width * done / max(self.total, 1))
    text = " ".join(f"{n} {l:.4f}" for n, l in zip(self.task_names, losses))
    seconds = max(time.time() - self.start, 1e-9)
    line = (
      f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
      f"train loss {text} ({done / seconds:.1f} it/s)"
    )
    sys.stderr.write(("\r" + line) if self.interactive else line)
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


def run_settings(config: RunConfig) -> dict:
  """``config`` as the JSON-ready dict a checkpoint records and is compared against."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def _settings_differences(saved: dict, now: dict) -> list[str]:
  return [
    f"{key} {saved.get(key)!r} (now {now[key]!r})"
    for key in sorted(now)
    if key not in RESUMABLE_CHANGES and saved.get(key) != now[key]
  ]


def save_checkpoint(path: str, state: dict, settings: dict, fingerprint: dict, progress) -> None:
  """Writes a checkpoint atomically: ``state`` holds ``current``, ``best`` and ``initial``
  (see :func:`checkpoint_to_bytes`), beside the settings, data fingerprint and progress."""
  extra = {"config": settings, "data": fingerprint, "progress": progress}
  blob = checkpoint_to_bytes(state["current"], state["best"], state["initial"], extra)
  atomic_write_bytes(path, blob)


def load_checkpoint(path: str, settings: dict, fingerprint: dict, initial: dict):
  """Reads ``path`` after checking that it was written with ``settings`` and the same data.

  Args:
    path: a file written by :func:`save_checkpoint`.
    settings: this run's settings (:func:`run_settings`); only ``epochs`` may differ.
    fingerprint: this run's :func:`data_fingerprint`.
    initial: the state at initialisation, as given to :func:`checkpoint_to_bytes`.

  Returns:
    ``(current, best, progress)``.

  Raises:
    CheckpointError: unreadable, or written with other settings or for other data.
  """
  try:
    with open(path, "rb") as f:
      blob = f.read()
  except OSError as err:
    raise CheckpointError(f"{path}: cannot read the checkpoint: {err.strerror}") from None
  extra = checkpoint_metadata(blob, path)
  differences = _settings_differences(extra["config"], settings)
  if differences:
    raise CheckpointError(
      f"{path}: written with other settings: {'; '.join(differences)}; "
      "resume with the same settings or start afresh"
    )
  if extra["data"] != fingerprint:
    raise CheckpointError(
      f"{path}: written for other data (rows, label counts or sampled rows differ); "
      "resume with the same data or start afresh"
    )
  current, best, extra = checkpoint_from_bytes(blob, initial, path)
  return current, best, extra["progress"]


def _finite(tree) -> bool:
  return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


class _Diverged(Exception):
  def __init__(self, epoch: int, step: int, reason: str):
    super().__init__(reason)
    self.epoch, self.step, self.reason = epoch, step, reason


def _train_epoch(trainer, config, splits, current, info, progress) -> dict:
  """One epoch of training; returns the new ``current`` state and logs sampled steps."""
  epoch = info["epoch"]
  task_names = splits["train"].task_names
  n_batches = max(len(splits["train"]) // config.batch_size, 1)
  bar = _Progress(
    f"{config.method} seed {config.seed} epoch {epoch + 1}/{config.epochs}",
    n_batches,
    task_names,
    progress,
  )
  running = np.zeros(len(task_names))
  params, rest, opt_state = current["params"], current["rest"], current["opt_state"]
  for i, batch in enumerate(train_batches(splits["train"], config.batch_size, config.seed, epoch)):
    out = trainer.train_step(params, rest, opt_state, batch)
    params, rest, opt_state = out.params, out.rest, out.opt_state
    if i % config.log_every == 0 or i == n_batches - 1:
      losses = np.asarray(out.losses)
      if not np.all(np.isfinite(losses)):
        raise _Diverged(epoch + 1, info["steps"] + i, f"non-finite task losses {losses.tolist()}")
      running = losses if i == 0 else 0.9 * running + 0.1 * losses
      info["log"].append(
        {
          "step": info["steps"] + i,
          "losses": losses.tolist(),
          "weights": np.asarray(out.weights).tolist(),
          "shared_update_rms": float(out.shared_update_rms),
        }
      )
      bar.show(i + 1, running)
  jax.block_until_ready(params)
  if not _finite(params):
    raise _Diverged(epoch + 1, info["steps"] + n_batches - 1, "non-finite parameters")
  bar.show(n_batches, running, final=True)
  info["steps"] += n_batches
  return {"params": params, "rest": rest, "opt_state": opt_state}


def new_progress() -> dict:
  """A run's progress before its first epoch: epochs done, best validation mean AUC and its
  epoch, epochs without improvement, steps taken, validation history and sampled step log."""
  return {
    "epoch": 0,
    "best_val": float("-inf"),
    "best_epoch": -1,
    "bad_epochs": 0,
    "steps": 0,
    "val_history": [],
    "log": [],
  }


def record_validation(info: dict, val: dict, seconds: float) -> bool:
  """Adds an epoch's validation metrics to a run's progress (its epoch and training time
  added to ``val``) and advances early stopping; returns whether the epoch is the best so far."""
  val.update(epoch=info["epoch"] + 1, train_seconds=seconds)
  info["val_history"].append(val)
  better = _is_better(val["mean_auc"], info)
  if better:
    info.update(best_val=val["mean_auc"], best_epoch=val["epoch"], bad_epochs=0)
  else:
    info["bad_epochs"] += 1
  info["epoch"] = val["epoch"]
  return better


def _is_better(value: float, info: dict) -> bool:
  """The first epoch is always the best so far; a later one when its score is higher."""
  return info["best_epoch"] < 0 or (np.isfinite(value) and value > info["best_val"])


def run(
  config: RunConfig,
  splits: dict[str, RankingData],
  *,
  checkpoint: str | None = None,
  progress: bool = True,
  on_epoch: Callable[[dict], None] | None = None,
  on_divergence: str = "raise",
) -> dict:
  """Trains on ``splits["train"]``, early-stops on ``splits["val"]``, reports ``splits["test"]``.

  Args:
    config: the run.
    splits: ``{"train", "val", "test"}`` data with shared cardinalities.
    checkpoint: path of a checkpoint file; written atomically after every epoch and
      resumed from when it exists (an interrupted run continues where it stopped). It
      holds the configuration, a fingerprint of the data, the parameters, model state and
      optimizer state of the last epoch and the parameters of the best one (compactly:
      see :func:`checkpoint_to_bytes`), and the history so far.
    progress: show a progress bar per epoch on stderr.
    on_epoch: called after every epoch with its validation metrics, ``"epoch"`` and
      ``"best"`` (whether it is the best epoch so far).
    on_divergence: a non-finite training loss or parameter: ``"raise"``
      (``FloatingPointError``) or ``"record"`` (stop this run and return the test metrics of
      the best epoch before it, with ``"diverged"`` giving the epoch, step and reason).

  Returns:
    A JSON-ready dict: the configuration, the test metrics of the best epoch, the
    validation history, the sampled training losses, task weights and RMS of the applied
    shared update, and ``"diverged"`` (``None`` unless the run diverged).

  Raises:
    CheckpointError: the checkpoint is unreadable, or was written with another
      configuration (other than a larger ``epochs``) or for other data.
    FloatingPointError: divergence, with ``on_divergence="raise"``.
  """
  if on_divergence not in ("raise", "record"):
    raise ValueError(f"on_divergence must be 'raise' or 'record', got {on_divergence!r}")
  trainer = _make_trainer(config, splits["train"])
  initial = {
    "params": trainer.params,
    "rest": trainer.rest,
    "opt_state": trainer.tx.init(trainer.params),
  }
  current, best = initial, {"params": trainer.params, "rest": trainer.rest}
  info = new_progress()
  fingerprint = data_fingerprint(splits)
  if checkpoint and os.path.exists(checkpoint):
    current, best, info = load_checkpoint(checkpoint, run_settings(config), fingerprint, initial)

  diverged = None
  while info["epoch"] < config.epochs and info["bad_epochs"] < config.patience:
    t0 = time.time()
    try:
      current = _train_epoch(trainer, config, splits, current, info, progress)
    except _Diverged as err:
      message = f"{config.method} seed {config.seed}: {err.reason} at epoch {err.epoch}"
      if on_divergence == "raise":
        raise FloatingPointError(f"{message}, step {err.step}") from None
      diverged = {"epoch": err.epoch, "step": err.step, "reason": err.reason}
      break
    val = trainer.evaluate(current["params"], current["rest"], splits["val"], config.batch_size)
    if record_validation(info, val, time.time() - t0):
      best = {"params": current["params"], "rest": current["rest"]}
    if on_epoch:
      on_epoch({**val, "best": info["best_epoch"] == val["epoch"]})
    if checkpoint:
      state = {"current": current, "best": best, "initial": initial}
      save_checkpoint(checkpoint, state, run_settings(config), fingerprint, info)

  test = _test_metrics(trainer, best, splits["test"], config, info)
  return {
    "config": dataclasses.asdict(config),
    "test": test,
    "best_epoch": info["best_epoch"],
    "epochs_run": info["epoch"],
    "val_history": info["val_history"],
    "log": info["log"],
    "diverged": diverged,
  }


def _test_metrics(trainer, best, test: RankingData, config: RunConfig, info: dict) -> dict:
  """Test metrics of the best epoch; NaN when no epoch finished (a run diverged in its first)."""
  if info["best_epoch"] < 0:
    names = test.task_names
    keys = [f"{t}_auc" for t in names] + [f"{t}_logloss" for t in names]
    return {key: float("nan") for key in keys + ["mean_auc", "mean_logloss"]}
  return trainer.evaluate(best["params"], best["rest"], test, config.batch_size)
