"""Loss-level weightings: uncertainty weights -> 1/L, FAMO's logits follow the loss decrease, loss errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax._losses import famo, uncertainty
from pub_optax._methods import make_method


def _run(weighting, losses_seq):
  """Feeds a (T, K) sequence of losses to the weighting, jitted in one scan; returns (T, K) weights."""
  losses_seq = jnp.asarray(losses_seq, jnp.float32)

  def step(state, losses):
    res = weighting.weigh(losses, state)
    return res.state, res.weights

  state = weighting.init(losses_seq.shape[1], jnp.float32)
  return jax.jit(lambda s: jax.lax.scan(step, s, losses_seq))(state)


def test_uncertainty_weights_converge_to_inverse_losses():
  """For fixed losses the optimum of Σ exp(-s)L + s is s = log L: weights -> 1/L."""
  losses = np.array([4.0, 0.5, 1.0])
  w = uncertainty(learning_rate=0.02)
  assert w.kind == "loss" and w.needs_losses
  state, weights = _run(w, np.tile(losses, (1500, 1)))
  weights = np.asarray(weights)
  np.testing.assert_allclose(weights[0], 1.0)  # init s = 0
  # converged to float32 rounding: measured 6e-7 on both, against bounds of 1e-3
  np.testing.assert_allclose(weights[-1], 1.0 / losses, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(state.log_vars), np.log(losses), atol=1e-3)
  # Monotone approach from both sides (no overshoot beyond a small Adam wobble).
  assert weights[100, 0] < 1.0 and weights[100, 1] > 1.0


def test_famo_lowers_the_weight_of_the_task_whose_loss_drops_faster():
  """Task 0's loss halves every step, task 1's decreases by 1%: FAMO moves weight to task 1."""
  t = np.arange(60)[:, None]
  losses = np.concatenate([2.0 * 0.5 ** (t / 10), 2.0 * 0.99 ** (t / 10)], axis=1)
  w = famo(learning_rate=0.025, gamma=0.0)
  state, weights = _run(w, losses)
  weights = np.asarray(weights)
  # First step: z = 1/2, w ∝ 1/L (equal losses give equal weights).
  np.testing.assert_allclose(weights[0], [0.5, 0.5], rtol=1e-6)
  logits = np.asarray(state.logits)
  assert logits[0] < logits[1]
  z = np.exp(logits) / np.exp(logits).sum()
  ratio = z / (losses[-1] + 1e-8)
  np.testing.assert_allclose(weights[-1], ratio / ratio.sum(), rtol=1e-5)
  # The softmax part alone (losses equalised) prefers the slow task.
  assert z[1] > z[0] + 0.05  # measured z = (0.08, 0.92)


def test_famo_min_losses_keep_negative_losses_finite():
  w = famo(min_losses=-21.0, gamma=0.0)
  _, weights = _run(
    w, np.array([[-15.0, -10.0], [-16.0, -10.5], [-30.0, -11.0]])
  )  # -30 < min: clamped
  weights = np.asarray(weights)
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights[0], np.array([1 / 6, 1 / 11]) / (1 / 6 + 1 / 11), rtol=1e-5)


@pytest.mark.parametrize("name", ["uncertainty", "famo"])
def test_missing_losses_and_wrong_number_of_losses_raise(name):
  tx = make_method(name, 1e-3, num_tasks=2)
  params = jnp.zeros(3)
  grads = jnp.ones((2, 3))
  state = tx.init(params)
  with pytest.raises(ValueError, match=name):
    tx.update(grads, state, params)
  with pytest.raises(ValueError, match=r"task_losses must have shape \(K,\) = \(2,\)"):
    jax.jit(lambda s, l: tx.update(grads, s, params, task_losses=l))(state, jnp.ones(3))
  updates, _ = tx.update(grads, state, params, task_losses=jnp.array([1.0, 2.0]))
  assert np.all(np.isfinite(np.asarray(updates)))
