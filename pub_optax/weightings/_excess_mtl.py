r"""ExcessMTL: weights raised multiplicatively for the tasks furthest from their own optimum.

ExcessMTL (He et al., 2024) weighs tasks by their *excess risk*, the gap between a task's
loss and the best loss it could reach, rather than by the loss itself, so that a task with
a high but irreducible loss (label noise) does not take over. A second-order expansion
gives the excess risk of task k as ``½ g_kᵀ H_k⁻¹ g_k``, with the Hessian ``H_k``
approximated by a diagonal AdaGrad-style preconditioner built from the task's own squared
gradients. As in LibMTL's implementation (from the authors' code), at every step, over the
shared coordinates ``c``:

.. math::

  S_{kc} &\leftarrow S_{kc} + g_{kc}^2,\qquad
  e_k = \sum_c \frac{g_{kc}^2}{\sqrt{S_{kc} + \epsilon}},\\
  r_k &= e_k / e_k^{(0)},\qquad
  \alpha \leftarrow K\,\frac{\alpha \odot \exp(\eta\, r)}{\sum_j \alpha_j \exp(\eta\, r_j)},\qquad
  d = \sum_k \alpha_k\, g_k,

with ``S = 0`` and ``α = 1`` at first and ``η`` the robust step size. The baseline
``e^{(0)}`` is the first step's estimate: at the first step LibMTL records it and leaves the
weights at 1 (its ``first_epoch`` branch), and from the second step on every estimate is
divided by it (scale processing). Here a task's baseline is its first *non-zero* estimate,
and its ratio is 0 until then, so a task whose first gradient is zero does not divide by
zero; with non-zero first gradients this is LibMTL's rule exactly. The weights sum to K,
as LibMTL's loss weights; the update is computed as ``K·softmax(log α + η r)``, the same
numbers without overflow. TorchJD 0.18's ``ExcessMTLWeighting`` differs in starting from
``1/K`` and updating the weights at the first step already.

The accumulator ``S`` has one entry per task and shared coordinate (memory K× the shared
parameters, in the vectors' dtype promoted to float32), so ExcessMTL is a coordinate-kind
rule; its direction is the weighted sum of the task vectors themselves. LibMTL applies the
weights to the losses, hence to task-specific parameters too; here task-specific leaves
receive ``Σ_k g_k`` as with every weighting.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax._gram import weighted_sum
from pub_optax.weightings._base import (
  CoordinateResult,
  Weighting,
  check_task_axis_state,
  coordinatewise,
  task_axis_zeros,
)

Array = jax.Array


class ExcessMTLState(NamedTuple):
  """State of :func:`excess_mtl`.

  Attributes:
    sq_sum: tuple of the accumulated squared task vectors ``S``, one
      ``(K, *leaf_shape)`` array per shared leaf.
    baseline: ``(K,)`` each task's first non-zero excess-risk estimate (0 until then).
    weights: ``(K,)`` the weights α of the last step (1 at first; they sum to K).
  """

  sq_sum: tuple
  baseline: Array
  weights: Array


def excess_mtl(robust_step_size: float = 1e-2, *, eps: float = 1e-7) -> Weighting:
  r"""ExcessMTL as a coordinate-kind :class:`~pub_optax.weightings.Weighting` named ``"excess_mtl"``.

  Args:
    robust_step_size: η > 0, the step of the multiplicative weight update (LibMTL's
      ``robust_step_size`` default, 1e-2; TorchJD 0.18 defaults to 1).
    eps: ε ≥ 0 added to the accumulated squares under the square root (1e-7, as
      LibMTL and TorchJD).

  Returns:
    A coordinate-kind Weighting with state :class:`ExcessMTLState`; its weights are
    α (positive, summing to K) and its direction ``Σ_k α_k g_k``. The excess-risk
    ratios are invariant to scaling a task's gradients by a constant (up to ε).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from pub_optax.weightings import excess_mtl
    >>> w = excess_mtl(robust_step_size=1.0, eps=0.0)
    >>> state = w.init(2, jnp.float32, (jax.ShapeDtypeStruct((2,), jnp.float32),))
    >>> vectors = (jnp.array([[1.0, 0.0], [0.0, 2.0]]),)
    >>> res = w.weigh(vectors, state, None)  # first step: baselines e = (1, 2), α stays 1
    >>> res.weights.tolist()
    [1.0, 1.0]
    >>> res = w.weigh(vectors, res.state, None)  # e = (1/√2, 2/√2): equal ratios
    >>> res.weights.tolist()
    [1.0, 1.0]

  References:
    He, Zhou, Chen, Wang, Zhao & Xu, "Robust Multi-Task Learning with Excess Risks",
    ICML 2024.
  """
  step, eps = float(robust_step_size), float(eps)
  if not step > 0.0:
    raise ValueError(f"robust_step_size must be positive, got {robust_step_size}")
  if not eps >= 0.0:
    raise ValueError(f"eps must be non-negative, got {eps}")

  def init(num_tasks, dtype, shared):
    dtype = jnp.promote_types(dtype, jnp.float32)
    return ExcessMTLState(
      task_axis_zeros(num_tasks, shared),
      jnp.zeros((num_tasks,), dtype),
      jnp.ones((num_tasks,), dtype),
    )

  def rule(vectors, state, task_losses=None):
    del task_losses
    check_task_axis_state("excess_mtl: the accumulators", state.sq_sum, vectors)
    dtype = state.weights.dtype
    k = vectors[0].shape[0]
    sq_sum, risk = [], jnp.zeros((k,), dtype)
    for s, v in zip(state.sq_sum, vectors):
      sq = jnp.square(v.astype(s.dtype))
      s = s + sq
      sq_sum.append(s)
      scale = s + eps  # 0 only where every gradient so far was 0 (with eps = 0): no risk there
      share = jnp.where(scale > 0, sq / jnp.sqrt(jnp.where(scale > 0, scale, 1.0)), 0.0)
      risk = risk + jnp.sum(share.reshape(k, -1), 1).astype(dtype)
    started = state.baseline > 0
    ratio = jnp.where(started, risk / jnp.where(started, state.baseline, 1.0), 0.0)
    baseline = jnp.where(started, state.baseline, risk)
    weights = k * jax.nn.softmax(jnp.log(state.weights) + step * ratio)
    direction = tuple(weighted_sum(weights, v).astype(v.dtype) for v in vectors)
    new_state = ExcessMTLState(tuple(sq_sum), baseline, weights.astype(dtype))
    return CoordinateResult(direction, weights.astype(dtype), new_state, jnp.zeros((), dtype))

  return coordinatewise("excess_mtl", init, rule)
