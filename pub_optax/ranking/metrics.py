"""Exact host-side evaluation metrics for multi-task ranking: AUC and logloss.

All functions take numpy arrays (call them after moving predictions to the
host) and compute in float64. The AUC is exact: scores that tie count one half,
which is what ``sklearn.metrics.roc_auc_score`` computes. An optional boolean
``mask`` selects the real rows of padded evaluation batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
  "auc",
  "logloss_from_logits",
  "logloss_from_probabilities",
  "task_metrics",
]


def _select(labels, values, mask, name: str) -> tuple[np.ndarray, np.ndarray]:
  labels = np.asarray(labels).reshape(-1)
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  if labels.shape != values.shape:
    raise ValueError(f"{name}: labels have {labels.size} entries, predictions {values.size}")
  if mask is not None:
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if mask.shape != labels.shape:
      raise ValueError(f"{name}: mask has {mask.size} entries, labels {labels.size}")
    labels, values = labels[mask], values[mask]
  bad = (labels != 0) & (labels != 1)
  if bad.any():
    raise ValueError(f"{name}: {int(bad.sum())} labels are not 0 or 1")
  if not np.isfinite(values).all():
    raise ValueError(f"{name}: {int((~np.isfinite(values)).sum())} predictions are not finite")
  return labels.astype(bool), values


def auc(labels, scores, mask=None) -> float:
  """Exact area under the ROC curve; tied scores count one half.

  ``AUC = (#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (P · N)`` over
  positive/negative pairs, computed by one sort and integer counts per tie
  group (so it equals the Mann-Whitney U with average ranks, and
  ``sklearn.metrics.roc_auc_score``).

  Args:
    labels: ``(N,)`` array of 0/1.
    scores: ``(N,)`` real scores (logits or probabilities; any monotone map
      gives the same AUC).
    mask: optional ``(N,)`` booleans; only rows where it is true count.

  Returns:
    The AUC as a Python float.

  Raises:
    ValueError: if only one class is present (the message gives both counts),
      labels are not 0/1, scores are not finite, or shapes disagree.

  Example:
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc([0, 1, 1], [1, 1, 2])   # the tie counts one half
    0.75
  """
  positive, values = _select(labels, scores, mask, "auc")
  n_pos = int(positive.sum())
  n_neg = int(positive.size - n_pos)
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"auc: needs both classes, got {n_pos} positives and {n_neg} negatives")
  order = np.argsort(values, kind="stable")
  sorted_values = values[order]
  sorted_positive = positive[order]
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  pos_per_group = np.add.reduceat(sorted_positive.astype(np.int64), starts)
  size_per_group = np.diff(np.r_[starts, values.size])
  neg_per_group = size_per_group - pos_per_group
  neg_below = np.cumsum(neg_per_group) - neg_per_group
  twice_wins = int(np.sum(pos_per_group * (2 * neg_below + neg_per_group)))
  return twice_wins / (2.0 * n_pos * n_neg)


def logloss_from_logits(labels, logits, mask=None) -> float:
  """Mean binary cross-entropy of labels given logits, computed stably.

  ``mean(max(z, 0) - y·z + log1p(exp(-|z|)))``, exact for any finite logit
  (no clipping, no overflow).

  Args:
    labels: ``(N,)`` array of 0/1.
    logits: ``(N,)`` real logits.
    mask: optional ``(N,)`` booleans selecting the rows that count.

  Returns:
    The mean logloss (natural log) as a Python float.

  Example:
    >>> round(logloss_from_logits([1, 0], [0.0, 0.0]), 6)   # log 2
    0.693147
  """
  positive, z = _select(labels, logits, mask, "logloss_from_logits")
  if z.size == 0:
    raise ValueError("logloss_from_logits: no rows")
  y = positive.astype(np.float64)
  return float(np.mean(np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))))


def logloss_from_probabilities(labels, probabilities, mask=None, eps: float = 1e-15) -> float:
  """Mean binary cross-entropy given probabilities clipped to ``[eps, 1 - eps]``.

  Prefer `logloss_from_logits`: clipping changes the value for confident
  wrong predictions.

  Args:
    labels: ``(N,)`` array of 0/1.
    probabilities: ``(N,)`` predicted probabilities of label 1.
    mask: optional ``(N,)`` booleans selecting the rows that count.
    eps: clipping bound.

  Returns:
    The mean logloss as a Python float.

  Example:
    >>> round(logloss_from_probabilities([1, 0], [0.5, 0.5]), 6)
    0.693147
  """
  positive, p = _select(labels, probabilities, mask, "logloss_from_probabilities")
  if p.size == 0:
    raise ValueError("logloss_from_probabilities: no rows")
  if ((p < 0) | (p > 1)).any():
    raise ValueError("logloss_from_probabilities: probabilities outside [0, 1]")
  p = np.clip(p, eps, 1.0 - eps)
  return float(-np.mean(np.where(positive, np.log(p), np.log1p(-p))))


def task_metrics(
  labels,
  logits,
  task_names: Sequence[str],
  mask=None,
  *,
  on_single_class: Literal["raise", "nan"] = "raise",
) -> dict[str, float]:
  """AUC and logloss of every task, and their means across tasks.

  Args:
    labels: ``(N, T)`` 0/1 labels.
    logits: ``(N, T)`` logits, one column per task.
    task_names: ``T`` names; keys are ``f"{name}_auc"`` and ``f"{name}_logloss"``.
    mask: optional ``(N,)`` booleans selecting the real (unpadded) rows.
    on_single_class: what to do when a task has only one class among the
      selected rows: ``"raise"`` (ValueError) or ``"nan"`` (its AUC is NaN,
      and so is ``mean_auc``).

  Returns:
    ``{"<task>_auc", "<task>_logloss" for each task, "mean_auc",
    "mean_logloss"}`` as Python floats. ``mean_auc`` is the paper's "Average".

  Example:
    >>> import numpy as np
    >>> labels = np.array([[0, 0], [1, 0], [1, 1]])
    >>> logits = np.array([[-2.0, -3.0], [1.0, -1.0], [2.0, 1.0]])
    >>> task_metrics(labels, logits, ("ctr", "ctcvr"))["mean_auc"]
    1.0
  """
  labels = np.asarray(labels)
  logits = np.asarray(logits)
  if labels.ndim != 2 or labels.shape != logits.shape:
    raise ValueError(
      f"task_metrics: labels {labels.shape} and logits {logits.shape} must be equal (N, T)"
    )
  if len(task_names) != labels.shape[1]:
    raise ValueError(f"task_metrics: {len(task_names)} task names for {labels.shape[1]} columns")
  if on_single_class not in ("raise", "nan"):
    raise ValueError(
      f"task_metrics: on_single_class must be 'raise' or 'nan', got {on_single_class!r}"
    )
  result: dict[str, float] = {}
  aucs, losses = [], []
  for t, name in enumerate(task_names):
    try:
      value = auc(labels[:, t], logits[:, t], mask)
    except ValueError as error:
      if on_single_class == "nan" and "needs both classes" in str(error):
        value = float("nan")
      else:
        raise ValueError(f"task {name!r}: {error}") from error
    loss = logloss_from_logits(labels[:, t], logits[:, t], mask)
    result[f"{name}_auc"] = value
    result[f"{name}_logloss"] = loss
    aucs.append(value)
    losses.append(loss)
  result["mean_auc"] = float(np.mean(aucs))
  result["mean_logloss"] = float(np.mean(losses))
  return result
