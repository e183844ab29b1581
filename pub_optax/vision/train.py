"""Training and evaluating a multi-task image classifier with any pub_optax method.

Same design as :mod:`pub_optax.ranking.train`: the NNX model is split once into ``(graphdef,
params, rest)``; a jitted step computes the K per-task softmax cross-entropies with one forward
pass, their gradients with one vmapped VJP (:func:`pub_optax.value_and_task_grads`), and hands
the stacked gradients (every leaf ``(K, *shape)``) plus ``task_losses=`` to the transformation,
so ``pub_optax.pub_adam``, ``pub_optax.balance(..., level="gradient")`` or any
``pub_optax.make_method`` result plug in unchanged. :func:`fit` trains for a number of epochs,
validates after each, keeps the epoch with the best validation mean accuracy and reports its
test metrics.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.losses
from flax import nnx

from pub_optax._training import make_train_step
from pub_optax.ranking.data.batching import pad_batch
from pub_optax.ranking.models.functional import apply, split
from pub_optax.vision.multi_fashion import MultiTaskImages

__all__ = ["Trainer", "batches", "fit", "task_losses"]


def task_losses(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy per task: ``(B, K, C)`` logits, ``(B, K)`` labels -> ``(K,)``.

  Args:
    logits: unnormalised class scores per example and task.
    labels: integer class per example and task.

  Returns:
    The ``(K,)`` vector of task losses (mean over the batch).

  Example:
    >>> import jax.numpy as jnp
    >>> [round(float(x), 4) for x in task_losses(jnp.zeros((4, 2, 10)), jnp.ones((4, 2), int))]
    [2.3026, 2.3026]
  """
  return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels), axis=0)


@dataclasses.dataclass
class Trainer:
  """Jitted train and evaluation steps for one image model and one transformation.

  Batches are dicts ``{"images": float32 (B, H, W, C), "labels": int32 (B, K)}``.

  Args:
    model: an NNX multi-task classifier, ``model(images) -> (B, K, C)`` logits, with
      ``shared_mask()`` (e.g. :class:`~pub_optax.vision.MultiLeNet`).
    tx: a transformation taking stacked per-task gradients and ``task_losses=``, e.g.
      ``pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask())``.

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> import pub_optax
    >>> from pub_optax.vision import MultiLeNet
    >>> model = MultiLeNet(rngs=nnx.Rngs(0))
    >>> trainer = Trainer(model, pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask()))
    >>> batch = {"images": np.zeros((8, 36, 36, 1), np.float32), "labels": np.zeros((8, 2), np.int32)}
    >>> out = trainer.train_step(trainer.params, trainer.rest, trainer.tx.init(trainer.params), batch)
    >>> out.losses.shape, out.weights.shape
    ((2,), (2,))
  """

  model: nnx.Module
  tx: optax.GradientTransformation

  def __post_init__(self):
    self.model.eval()
    self.eval_graph, _, _ = split(self.model)
    self.model.train()
    self.train_graph, self.params, self.rest = split(self.model)
    self.shared_mask = self.model.shared_mask()
    self.train_step = jax.jit(make_train_step(self.tx, self.shared_mask, self._losses))
    self.eval_step = jax.jit(self._eval_step)

  def _losses(self, params, rest, batch):
    logits, new_rest = apply(self.train_graph, params, rest, batch["images"])
    return task_losses(logits, batch["labels"]), new_rest

  def _eval_step(self, params, rest, batch):
    logits, _ = apply(self.eval_graph, params, rest, batch["images"])
    losses = optax.losses.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    correct = jnp.argmax(logits, axis=-1) == batch["labels"]
    return losses, correct

  def evaluate(self, params, rest, data: MultiTaskImages, batch_size: int = 1000) -> dict:
    """Per-task accuracy and loss on every row of ``data``.

    The last partial batch is padded to ``batch_size`` (one compiled shape) and its padding is
    masked out, never dropped.

    Args:
      params, rest: the model state to evaluate (e.g. ``trainer.params, trainer.rest``).
      data: the examples.
      batch_size: rows per evaluation batch.

    Returns:
      ``{"accuracy": [K floats], "mean_accuracy": float, "loss": [K floats],
      "mean_loss": float}``; accuracies in ``[0, 1]``, losses mean cross-entropies.

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> import optax
      >>> from pub_optax.vision import MultiLeNet, MultiTaskImages
      >>> trainer = Trainer(MultiLeNet(rngs=nnx.Rngs(0)), optax.adam(1e-3))
      >>> data = MultiTaskImages(np.zeros((5, 36, 36, 1), np.float32), np.zeros((5, 2), np.int32))
      >>> sorted(trainer.evaluate(trainer.params, trainer.rest, data, batch_size=4))
      ['accuracy', 'loss', 'mean_accuracy', 'mean_loss']
    """
    if len(data) == 0:
      raise ValueError("evaluate: no examples")
    batch_size = min(batch_size, len(data))
    loss_sum = np.zeros(data.n_tasks, np.float64)
    correct_sum = np.zeros(data.n_tasks, np.int64)
    for start in range(0, len(data), batch_size):
      batch = {
        "images": data.images[start : start + batch_size],
        "labels": data.labels[start : start + batch_size],
      }
      padded, mask = pad_batch(batch, batch_size)
      losses, correct = self.eval_step(params, rest, padded)
      loss_sum += np.asarray(losses, np.float64)[mask].sum(axis=0)
      correct_sum += np.asarray(correct)[mask].sum(axis=0)
    accuracy = correct_sum / len(data)
    loss = loss_sum / len(data)
    return {
      "accuracy": [float(a) for a in accuracy],
      "mean_accuracy": float(accuracy.mean()),
      "loss": [float(x) for x in loss],
      "mean_loss": float(loss.mean()),
    }


def batches(data: MultiTaskImages, batch_size: int, seed: int, epoch: int) -> Iterator[dict]:
  """Shuffled training batches of one static size, a pure function of ``(seed, epoch)``.

  The last partial batch is dropped when at least one full batch exists (a jitted step then
  compiles once); a data set smaller than ``batch_size`` is one batch.

  Args:
    data: the training examples.
    batch_size: rows per batch.
    seed, epoch: non-negative integers choosing the permutation.

  Returns:
    An iterator of ``{"images": ..., "labels": ...}`` numpy dicts.

  Example:
    >>> import numpy as np
    >>> data = MultiTaskImages(np.zeros((10, 2, 2, 1), np.float32), np.zeros((10, 2), np.int32))
    >>> [len(b["labels"]) for b in batches(data, 4, seed=0, epoch=0)]
    [4, 4]
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(data))
  stop = len(data) - len(data) % batch_size if len(data) >= batch_size else len(data)
  for start in range(0, stop, batch_size):
    index = np.sort(order[start : start + batch_size])
    yield {"images": data.images[index], "labels": data.labels[index]}


def fit(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  splits: Mapping[str, MultiTaskImages],
  epochs: int,
  batch_size: int = 256,
  seed: int = 0,
  *,
  eval_batch_size: int = 1000,
  patience: int | None = None,
  log: Callable[[dict], Any] | None = None,
) -> dict:
  """Trains ``model`` with ``tx``, validating per epoch and keeping the best epoch.

  After every epoch the model is evaluated on ``splits["val"]``; the parameters of the epoch
  with the highest validation mean accuracy (the first on ties) are kept, written back into
  ``model`` at the end, and evaluated on ``splits["test"]`` if present. With ``patience``,
  training stops early once that many epochs in a row did not beat the best validation mean
  accuracy.

  Args:
    model: e.g. :class:`~pub_optax.vision.MultiLeNet`; updated in place to the best epoch.
    tx: a transformation taking stacked per-task gradients (see :class:`Trainer`).
    splits: ``{"train": ..., "val": ..., "test": ...}`` (``"test"`` optional), e.g. from
      :func:`~pub_optax.vision.multi_fashion_splits`.
    epochs: number of passes over the training set, >= 1.
    batch_size: training batch size.
    seed: shuffling seed (the model's initialisation is fixed by its own ``rngs``).
    eval_batch_size: evaluation batch size.
    patience: stop after this many epochs without a better validation mean accuracy (>= 1);
      None trains every epoch.
    log: called with each epoch's record (e.g. ``print``).

  Returns:
    ``{"history": [per-epoch records], "best_epoch": int, "val": best validation metrics,
    "test": its test metrics or None, "epochs_run": epochs trained (fewer than ``epochs`` when
    early stopping ended training), "seconds_per_epoch": mean wall time of the epochs after
    the first (the first includes compilation; the first's time if ``epochs == 1``)}``. An
    epoch record holds ``epoch``, ``train_loss`` (mean per task), ``weights`` (mean task
    weights of a balancing state, NaN without one), ``val`` metrics, ``train_seconds`` and
    ``seconds`` (training plus validation).

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> import pub_optax
    >>> from pub_optax.vision import MultiLeNet, MultiTaskImages
    >>> rng = np.random.default_rng(0)
    >>> data = MultiTaskImages(rng.random((64, 36, 36, 1), np.float32),
    ...                        rng.integers(0, 10, (64, 2)))
    >>> model = MultiLeNet(rngs=nnx.Rngs(0))
    >>> tx = pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask())
    >>> result = fit(model, tx, {"train": data, "val": data}, epochs=1, batch_size=32)
    >>> result["best_epoch"], len(result["val"]["accuracy"])
    (0, 2)
  """
  if int(epochs) != epochs or epochs < 1:
    raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
  if patience is not None and (int(patience) != patience or patience < 1):
    raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
  for name in ("train", "val"):
    if name not in splits:
      raise ValueError(f"splits: missing {name!r} (have {sorted(splits)})")
  trainer = Trainer(model, tx)
  params, rest = trainer.params, trainer.rest
  opt_state = tx.init(params)
  history = []
  best = None  # (mean accuracy, epoch, params, rest, val metrics)
  for epoch in range(int(epochs)):
    if patience is not None and best is not None and epoch - best[1] > patience:
      break
    start = time.perf_counter()
    losses, weights, update_rms = [], [], []
    for batch in batches(splits["train"], batch_size, seed, epoch):
      out = trainer.train_step(params, rest, opt_state, batch)
      params, rest, opt_state = out.params, out.rest, out.opt_state
      losses.append(out.losses)
      weights.append(out.weights)
      update_rms.append(out.shared_update_rms)
    losses = np.asarray(jnp.stack(losses))  # waits for the last step
    weights = np.asarray(jnp.stack(weights))
    train_seconds = time.perf_counter() - start
    val = trainer.evaluate(params, rest, splits["val"], eval_batch_size)
    record = {
      "epoch": epoch,
      "train_loss": [float(x) for x in losses.mean(axis=0)],
      "weights": [float(x) for x in weights.mean(axis=0)],
      "shared_update_rms": float(np.median(np.asarray(jnp.stack(update_rms)))),
      "val": val,
      "train_seconds": train_seconds,
      "seconds": time.perf_counter() - start,
    }
    history.append(record)
    if log is not None:
      log(record)
    if best is None or val["mean_accuracy"] > best[0]:
      best = (val["mean_accuracy"], epoch, params, rest, val)
  _, best_epoch, params, rest, val = best
  nnx.update(model, params, rest)
  test = (
    trainer.evaluate(params, rest, splits["test"], eval_batch_size) if "test" in splits else None
  )
  times = [r["seconds"] for r in history]
  return {
    "history": history,
    "best_epoch": best_epoch,
    "val": val,
    "test": test,
    "epochs_run": len(history),
    "seconds_per_epoch": float(np.mean(times[1:] if len(times) > 1 else times)),
  }
