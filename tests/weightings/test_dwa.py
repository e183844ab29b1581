"""DWA: ones for two periods, then K·softmax of the ratio of the last two period averages / T."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._dwa import dwa

LOSSES = np.array(
  [[2.0, 1.0, 4.0], [1.0, 0.9, 3.0], [0.8, 0.9, 2.0], [0.4, 0.8, 1.0], [0.3, 0.8, 0.9]]
)


def _run(weighting, losses_seq):
  """Weights for a (T, K) loss sequence, jitted in one scan; returns (final state, (T, K))."""
  losses_seq = jnp.asarray(losses_seq, jnp.float32)

  def step(state, losses):
    res = weighting.weigh(losses, state)
    return res.state, res.weights

  state = weighting.init(losses_seq.shape[1], jnp.float32)
  return jax.jit(lambda s: jax.lax.scan(step, s, losses_seq))(state)


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def test_per_step_weights_match_a_hand_computation():
  w = dwa(temperature=2.0)
  assert w.kind == "loss" and w.needs_losses and w.name == "dwa"
  state, weights = _run(w, LOSSES)
  weights = np.asarray(weights)
  np.testing.assert_array_equal(weights[:2], 1.0)  # fewer than two previous losses
  for t in range(2, len(LOSSES)):
    expected = 3 * _softmax((LOSSES[t - 1] / LOSSES[t - 2]) / 2.0)
    np.testing.assert_allclose(weights[t], expected, rtol=1e-6)
  np.testing.assert_allclose(weights.sum(axis=1), 3.0, rtol=1e-6)
  # Task 1's loss decreased least from step 2 to step 3: the largest weight at step 4.
  assert np.argmax(weights[4]) == 1
  np.testing.assert_allclose(np.asarray(state.older), LOSSES[-2])
  np.testing.assert_allclose(np.asarray(state.newer), LOSSES[-1])


def test_period_averages_the_losses_of_each_period():
  seq = np.array([[4.0, 2.0], [2.0, 2.0], [2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.5, 1.0], [9, 9]])
  state, weights = _run(dwa(temperature=2.0, period=2), seq)
  weights = np.asarray(weights)
  # Periods: (steps 0-1) avg (3, 2); (2-3) avg (1.5, 1); (4-5) avg (0.75, 1).
  np.testing.assert_array_equal(weights[:4], 1.0)
  r1 = np.array([1.5 / 3.0, 1.0 / 2.0])  # used at steps 4 and 5
  np.testing.assert_allclose(weights[4], 2 * _softmax(r1 / 2.0), rtol=1e-6)
  np.testing.assert_allclose(weights[5], 2 * _softmax(r1 / 2.0), rtol=1e-6)
  r2 = np.array([0.75 / 1.5, 1.0 / 1.0])  # used at step 6
  np.testing.assert_allclose(weights[6], 2 * _softmax(r2 / 2.0), rtol=1e-6)
  # Step 6 started a new period: its loss is in the running sum.
  np.testing.assert_allclose(np.asarray(state.total), [9.0, 9.0])
  assert int(state.count) == 1 and int(state.complete) == 2


def test_temperature_sets_how_peaked_the_weights_are():
  seq = np.array([[1.0, 1.0], [0.5, 1.0], [0.25, 1.0]])
  _, sharp = _run(dwa(temperature=0.1), seq)
  _, flat = _run(dwa(temperature=100.0), seq)
  # Exactly 2/(1 + e^-5) = 1.9866 and 1 ± tanh(0.0025); temperature 1 gives 1.245 and 1 ± 0.245.
  assert float(sharp[-1, 1]) > 1.85
  np.testing.assert_allclose(np.asarray(flat[-1]), 1.0, atol=0.025)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"temperature": 0.0}, "temperature must be positive, got 0.0"),
    ({"temperature": float("nan")}, "temperature must be positive, got nan"),
    ({"period": 0}, "period must be a positive integer, got 0"),
    ({"period": 1.5}, "period must be a positive integer, got 1.5"),
    ({"period": True}, "period must be a positive integer, got True"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    dwa(**kwargs)


def test_missing_or_misshaped_losses_raise():
  w = dwa()
  state = w.init(2, jnp.float32)
  with pytest.raises(ValueError, match="'dwa' weighting needs the task losses"):
    w.weigh(None, state)
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    w.weigh(jnp.ones(3), state)


def test_toy_runs_finite_from_the_five_starts_float32():
  tx = pub_optax.balance(optax.scale_by_adam(), dwa(), 1e-3, num_tasks=2, level="gradient")
  x, losses = optimize(tx, dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(losses)))


def test_a_zero_loss_in_the_denominator_counts_as_ratio_one_and_is_reported():
  seq = np.array([[0.0, 1.0], [0.5, 0.5], [0.4, 0.5]])
  w = dwa()
  state = w.init(2, jnp.float32)
  residuals = []
  for losses in seq:
    res = jax.jit(w.weigh)(jnp.asarray(losses, jnp.float32), state)
    state = res.state
    residuals.append(float(res.residual))
  assert residuals == [0.0, 0.0, 1.0]
  # Ratios (1 in place of 0.5 / 0, 0.5 / 1): weights 2 softmax((1, 0.5) / 2).
  np.testing.assert_allclose(np.asarray(res.weights), 2 * _softmax(np.array([0.5, 0.25])), 1e-6)
