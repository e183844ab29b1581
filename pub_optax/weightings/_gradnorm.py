"""GradNorm: learn task weights that equalise weighted gradient norms, adjusted by training rates.

GradNorm (Chen et al. 2018) keeps learned weights ``w`` (state, ``Σ w = K``) and,
at every step, compares the weighted gradient norms ``G_k = w_k ‖g_k‖`` with the
targets

  Ḡ · r_k^α,   Ḡ = mean_k G_k,   r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0)),

where ``L_k(0)`` are the losses of the first call (recorded in the state) and
``r_k`` the relative inverse training rate: tasks that train slower get larger
targets. The weights take one gradient step on ``Σ_k |G_k − Ḡ r_k^α|`` with the
targets held constant (gradient ``sign(w_k‖g_k‖ − target_k) ‖g_k‖``), and are
renormalised to ``Σ w = K``. The weights applied at a step are the current ones;
the step then updates them for the next call.

Choices made here:

* The paper measures ``‖g_k‖`` on the last shared layer's weights, to keep the
  cost low. A Gram weighting sees the task vectors over all balanced (shared)
  parameters, so ``‖g_k‖ = sqrt(G_kk)`` over the shared parameters stands in for
  it (the paper notes the choice of layer is a cost trade-off).
* The weights take a plain gradient step with their own learning rate (the
  paper trains them with the network's optimizer; LibMTL parameterises them by a
  softmax). Weights are kept non-negative before the renormalisation.
* The losses must be positive (the training rates are loss ratios).

Scale: the weights applied at a step come from the state, not from the current
G; the size of their update, ``learning_rate · ‖g_k‖``, scales with the task
norms as in the paper.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult, check_gram
from pub_optax.weightings._linalg import finite_gram

Array = jax.Array


class GradNormState(NamedTuple):
  """State of :func:`gradnorm`: the weights, the first losses ``L(0)`` and whether they are set."""

  weights: Array
  initial_losses: Array
  started: Array


def gradnorm_step(
  weights: Array,
  norms: Array,
  losses: Array,
  initial_losses: Array,
  alpha: float = 1.5,
  learning_rate: float = 0.025,
) -> tuple[Array, Array]:
  r"""One GradNorm update of the weights: ``(new_weights, gradnorm_loss)``.

  Args:
    weights: ``(K,)`` current weights (``Σ w = K``).
    norms: ``(K,)`` task gradient norms ``‖g_k‖``.
    losses: ``(K,)`` current losses; ``initial_losses``: ``(K,)`` losses ``L(0)``.
    alpha: the restoring-force strength α.
    learning_rate: step size of the gradient step on the weights.

  Returns:
    The renormalised next weights and ``Σ_k |w_k‖g_k‖ − Ḡ r_k^α|`` at the current ones.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import gradnorm_step
    >>> w, loss = gradnorm_step(jnp.ones(2), jnp.array([3.0, 1.0]), jnp.ones(2), jnp.ones(2), 1.5, 0.1)
    >>> [round(float(x), 4) for x in w], float(loss)  # targets 2 and 2: (0.7, 1.1) * 2/1.8
    ([0.7778, 1.2222], 2.0)
  """
  ratio = losses / initial_losses
  rate = ratio / jnp.mean(ratio)
  weighted = weights * norms
  target = jax.lax.stop_gradient(jnp.mean(weighted) * rate**alpha)
  gap = weighted - target
  step = weights - learning_rate * jnp.sign(gap) * norms
  step = jnp.maximum(step, 0.0)
  total = jnp.sum(step)
  k = weights.shape[0]
  usable = total > 0
  new = jnp.where(usable, step * k / jnp.where(usable, total, 1.0), weights)
  return new, jnp.sum(jnp.abs(gap))


def gradnorm(alpha: float = 1.5, learning_rate: float = 0.025) -> Weighting:
  r"""GradNorm as a :class:`~pub_optax.weightings.Weighting` named ``"gradnorm"`` (needs the losses).

  Args:
    alpha: restoring-force strength α (1.5 in LibMTL; the paper uses 0.12 to 3
      depending on the benchmark).
    learning_rate: step size of the weights' gradient step.

  Returns:
    A Weighting with ``needs_losses=True`` and state :class:`GradNormState` (weights
    start at 1); its residual is the GradNorm loss ``Σ_k |w_k‖g_k‖ − Ḡ r_k^α|``
    relative to ``Σ_k w_k‖g_k‖``. NaN weights and an unchanged state for a
    non-finite G or losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import gradnorm
    >>> w = gradnorm(learning_rate=0.1)
    >>> state = w.init(2, jnp.float32)
    >>> gram = jnp.array([[9.0, 0.0], [0.0, 1.0]])  # norms 3 and 1
    >>> res = w.weigh(gram, state, jnp.array([1.0, 1.0]))
    >>> res.weights.tolist(), [round(float(x), 4) for x in res.state.weights]
    ([1.0, 1.0], [0.7778, 1.2222])

  References:
    Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization
    for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
  """
  alpha, learning_rate = float(alpha), float(learning_rate)
  if alpha < 0.0:
    raise ValueError(f"alpha must be non-negative, got {alpha}")
  if learning_rate <= 0.0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}")

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    ones = jnp.ones((num_tasks,), dt)
    return GradNormState(ones, ones, jnp.zeros((), bool))

  def weigh(gram, state, task_losses=None):
    check_gram(gram)
    w = state.weights
    losses = _losses(task_losses, "gradnorm", w.shape[0], w.dtype)
    ok, safe = finite_gram(jnp.asarray(gram, w.dtype))
    ok = ok & jnp.all(jnp.isfinite(losses))
    initial = jnp.where(state.started, state.initial_losses, losses)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(safe), 0.0))
    new_w, loss = gradnorm_step(w, norms, losses, initial, alpha, learning_rate)
    size = jnp.sum(w * norms)
    residual = jnp.where(size > 0, loss / jnp.where(size > 0, size, 1.0), 0.0)
    new_state = GradNormState(
      jnp.where(ok, new_w, w), jnp.where(ok, initial, state.initial_losses), state.started | ok
    )
    weights = jnp.where(ok, w, jnp.nan)
    return WeightingResult(weights, new_state, jnp.where(ok, residual, jnp.inf))

  return Weighting(init=init, weigh=weigh, name="gradnorm", needs_losses=True)
