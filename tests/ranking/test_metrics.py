"""Exact AUC / logloss against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from pub_optax.ranking.metrics import (
  auc,
  logloss_from_logits,
  logloss_from_probabilities,
  task_metrics,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_many_ties_on_1e5_rows(seed):
  rng = np.random.default_rng(seed)
  n = 100_000
  labels = (rng.random(n) < 0.03).astype(np.float32)
  scores = rng.integers(0, 20, n) + 3 * labels * rng.integers(0, 2, n)  # ties everywhere
  assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_equals_sklearn_on_continuous_and_mixed_scores():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 2, 5000)
  scores = rng.normal(size=5000) + labels
  scores[::7] = 0.25  # a block of ties mixed with distinct values
  assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_hand_values():
  assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
  assert auc([0, 1], [0.0, 1.0]) == 1.0
  assert auc([1, 0], [0.0, 1.0]) == 0.0
  assert auc([0, 1, 0, 1], [3, 3, 3, 3]) == 0.5
  assert auc([0, 1, 1], [1, 1, 2]) == 0.75  # (0.5 + 1) / 2


def test_auc_invariant_to_monotone_maps_and_row_order():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 1000)
  logits = rng.normal(size=1000) + labels
  base = auc(labels, logits)
  assert auc(labels, 1 / (1 + np.exp(-logits))) == pytest.approx(base, abs=1e-12)
  perm = rng.permutation(1000)
  assert auc(labels[perm], logits[perm]) == pytest.approx(base, abs=1e-15)


def test_auc_mask_equals_auc_on_subset():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 2, 300)
  scores = rng.integers(0, 5, 300)
  mask = rng.random(300) < 0.6
  assert auc(labels, scores, mask) == pytest.approx(
    roc_auc_score(labels[mask], scores[mask]), abs=1e-12
  )


def test_auc_single_class_raises_with_counts():
  with pytest.raises(ValueError, match="0 positives and 3 negatives"):
    auc([0, 0, 0], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="2 positives and 0 negatives"):
    auc([1, 1, 0], [0.1, 0.2, 0.3], mask=[True, True, False])


def test_auc_rejects_bad_inputs():
  with pytest.raises(ValueError, match="not 0 or 1"):
    auc([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="not finite"):
    auc([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="entries"):
    auc([0, 1, 1], [0.1, 0.2])


def test_logloss_from_logits_equals_sklearn_and_is_stable():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 1000)
  logits = rng.normal(scale=3, size=1000)
  expected = log_loss(labels, 1 / (1 + np.exp(-logits)))
  assert logloss_from_logits(labels, logits) == pytest.approx(expected, rel=1e-10)
  # Huge logits: exact value without overflow or clipping.
  assert logloss_from_logits([0, 1], [1000.0, -1000.0]) == pytest.approx(1000.0)
  assert logloss_from_logits([1, 0], [1000.0, -1000.0]) == 0.0
  assert logloss_from_logits([1], [0.0]) == pytest.approx(np.log(2))


def test_logloss_from_probabilities_equals_sklearn_and_masks():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 500)
  probs = rng.random(500)
  mask = rng.random(500) < 0.5
  assert logloss_from_probabilities(labels, probs) == pytest.approx(
    log_loss(labels, probs), rel=1e-10
  )
  assert logloss_from_probabilities(labels, probs, mask) == pytest.approx(
    log_loss(labels[mask], probs[mask], labels=[0, 1]), rel=1e-10
  )
  with pytest.raises(ValueError, match="outside"):
    logloss_from_probabilities([0, 1], [0.5, 1.5])


def test_task_metrics_per_task_values_mean_and_mask():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, (400, 2))
  logits = rng.normal(size=(400, 2)) + labels
  mask = np.arange(400) < 350
  result = task_metrics(labels, logits, ("ctr", "ctcvr"), mask)
  assert set(result) == {
    "ctr_auc",
    "ctr_logloss",
    "ctcvr_auc",
    "ctcvr_logloss",
    "mean_auc",
    "mean_logloss",
  }
  for t, name in enumerate(("ctr", "ctcvr")):
    assert result[f"{name}_auc"] == pytest.approx(roc_auc_score(labels[:350, t], logits[:350, t]))
    assert result[f"{name}_logloss"] == pytest.approx(
      logloss_from_logits(labels[:350, t], logits[:350, t])
    )
  assert result["mean_auc"] == pytest.approx((result["ctr_auc"] + result["ctcvr_auc"]) / 2)


def test_task_metrics_single_class_policy():
  labels = np.array([[0, 0], [1, 0], [1, 0]])
  logits = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
  with pytest.raises(ValueError, match="'ctcvr'.*0 positives"):
    task_metrics(labels, logits, ("ctr", "ctcvr"))
  result = task_metrics(labels, logits, ("ctr", "ctcvr"), on_single_class="nan")
  assert result["ctr_auc"] == 1.0 and np.isnan(result["ctcvr_auc"]) and np.isnan(result["mean_auc"])
  with pytest.raises(ValueError, match="task names"):
    task_metrics(labels, logits, ("ctr",))
