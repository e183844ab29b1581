"""The two-task toy problem of the PUB paper's Fig. 2 (also used by CAGrad, Nash-MTL and FAMO).

Two losses of ``x = (x1, x2)`` whose Pareto front is a curve; the joint optimum of
``L1 + L2`` is near ``x ≈ (0, −8.355)`` with ``L1 = L2 ≈ −15.09``.
"""

from __future__ import annotations

import jax.numpy as jnp

STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
"""The five starting points of the paper's figure."""

OPTIMUM_LOSS = -15.09
"""Both losses at the joint optimum of L1 + L2 (to 2 decimals)."""


def _relu(t):
  # Gradient 1 at the kink, as torch.relu's autograd in the original code;
  # jnp.maximum(t, 0) would split the tie and change the (0, 0) start.
  return jnp.where(t >= 0, t, 0.0)


def toy_losses(x):
  """Both task losses at ``x`` (shape ``(2,)``); returns ``(2,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.toy import toy_losses
    >>> [round(float(v), 2) for v in toy_losses(jnp.array([0.0, -8.355]))]
    [-15.09, -15.09]
  """
  x1, x2 = x[0], x[1]
  f1 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 - 7.0) - jnp.tanh(-x2)), 5e-6)) + 6.0
  f2 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 + 3.0) + jnp.tanh(-x2) + 2.0), 5e-6)) + 6.0
  c1 = _relu(jnp.tanh(x2 / 2.0))
  c2 = _relu(jnp.tanh(-x2 / 2.0))
  h1 = ((-x1 + 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
  h2 = ((-x1 - 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
  return jnp.stack([f1 * c1 + h1 * c2, f2 * c1 + h2 * c2])


def optimize(
  tx, starts=STARTS, num_steps: int = 35_000, *, record_every: int = 0, dtype=jnp.float32
):
  """Runs a multi-task transformation on the toy from every start, jitted and vmapped.

  Args:
    tx: an optax transformation taking stacked per-task gradients ``(2, 2)``
      (e.g. :func:`pub_optax.pub_adam`) and returning a ``(2,)`` update; the task
      losses are passed as ``task_losses=`` for loss-level methods.
    starts: ``(S, 2)`` starting points.
    num_steps: number of steps (the paper: 35,000 with Adam at lr 1e-3).
    record_every: if > 0, also return the iterate every this many steps.
    dtype: float32 or float64 (the latter needs ``jax_enable_x64``).

  Returns:
    ``(final_x (S, 2), final_losses (S, 2))``, plus the path ``(S, T, 2)`` when
    ``record_every > 0``.
  """
  import jax

  from pub_optax._grads import value_and_task_grads

  task_grads = value_and_task_grads(toy_losses)

  def run_one(x0):
    def step(carry, _):
      x, state = carry
      losses, g = task_grads(x)
      updates, state = tx.update(g, state, x, task_losses=losses)
      return (x + updates, state), None

    def chunk(carry, _):
      carry, _ = jax.lax.scan(step, carry, None, length=max(record_every, 1))
      return carry, carry[0]

    carry = (x0, tx.init(x0))
    if record_every > 0:
      carry, path = jax.lax.scan(chunk, carry, None, length=num_steps // record_every)
      return carry[0], path
    carry, _ = jax.lax.scan(step, carry, None, length=num_steps)
    return carry[0], None

  x0 = jnp.asarray(starts, dtype)
  final, path = jax.jit(jax.vmap(run_one))(x0)
  losses = jax.vmap(toy_losses)(final)
  return (final, losses, path) if record_every > 0 else (final, losses)
