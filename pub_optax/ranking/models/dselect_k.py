"""DSelect-k: MMoE with each task's softmax gate replaced by a differentiable k-of-n expert
selector (Hazimeh et al., NeurIPS 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Tower


def smooth_step(t: jax.Array, gamma: float = 1.0) -> jax.Array:
  """The cubic smooth-step: 0 below ``-gamma/2``, 1 above ``gamma/2``, ``C¹`` in between.

  Example:
    >>> smooth_step(jnp.array([-1.0, 0.0, 0.25, 1.0])).tolist()
    [0.0, 0.5, 0.84375, 1.0]
  """
  cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
  return jnp.where(t <= -gamma / 2, 0.0, jnp.where(t >= gamma / 2, 1.0, cubic))


def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


class DSelectGate(nnx.Module):
  """One task's DSelect-k gate: ``k`` single-expert selectors and softmax weights over them.

  Selector ``i`` holds ``m = ceil(log2 n)`` smooth-step bits ``s = S(z_i(x))``; the weight of
  binary code ``c`` is ``Π_b (s_b if c_b else 1 - s_b)``, which sums to 1 over the ``2^m`` codes
  and is one-hot once the bits saturate. Code ``c`` selects expert ``c mod n``, so when ``n`` is
  not a power of two the surplus codes fold onto the first experts and the expert weights still
  sum to 1 (the paper adds a penalty for the surplus codes instead). The expert weights are
  ``Σ_i softmax(w(x))_i · selector_i``.

  Args:
    in_dim: width of the gate's input.
    n_experts: number of experts n.
    k: number of selectors (at most k experts get weight once saturated); the paper uses 2.
    gamma: the smooth-step's width (the paper's 1.0).
    rngs: NNX random streams.

  Returns:
    A module ``gate(x, experts)`` with ``x: (B, in_dim)``, ``experts: (B, n, D)`` returning
    ``(B, D)``; :meth:`expert_weights` gives the ``(B, n)`` weights.

  Example:
    >>> from flax import nnx
    >>> gate = DSelectGate(4, 3, k=2, rngs=nnx.Rngs(0))
    >>> w = gate.expert_weights(jnp.ones((2, 4)))
    >>> w.shape, [round(float(s), 5) for s in w.sum(-1)]
    ((2, 3), [1.0, 1.0])
  """

  def __init__(
    self, in_dim: int, n_experts: int, *, k: int = 2, gamma: float = 1.0, rngs: nnx.Rngs
  ):
    if n_experts < 1 or k < 1 or gamma <= 0:
      raise ValueError(f"need n_experts >= 1, k >= 1, gamma > 0; got {n_experts}, {k}, {gamma}")
    self.k, self.gamma, self.n_experts = int(k), float(gamma), int(n_experts)
    self.n_bits = max(1, math.ceil(math.log2(n_experts)))
    z_init = _uniform(gamma / 100)  # the paper's initialisation of both gate maps
    self.z_logits = nnx.Linear(
      in_dim, self.k * self.n_bits, kernel_init=z_init, bias_init=z_init, rngs=rngs
    )
    w_init = _uniform(0.05)
    self.w_logits = nnx.Linear(in_dim, self.k, kernel_init=w_init, bias_init=w_init, rngs=rngs)

  def selectors(self, x: jax.Array) -> jax.Array:
    """``(B, k, n)``: every selector's weights over the experts (each row sums to 1)."""
    codes = np.arange(2**self.n_bits)
    code_bits = (codes[:, None] >> np.arange(self.n_bits)[::-1]) & 1 == 1  # (2^m, m), MSB first
    code_expert = np.eye(self.n_experts, dtype=np.float32)[codes % self.n_experts]  # (2^m, n)
    bits = smooth_step(self.z_logits(x).reshape(-1, self.k, 1, self.n_bits), self.gamma)
    per_code = jnp.prod(jnp.where(code_bits, bits, 1.0 - bits), axis=-1)  # (B, k, 2^m)
    return per_code @ code_expert

  def expert_weights(self, x: jax.Array) -> jax.Array:
    """``(B, n)``: the softmax-weighted sum of the selectors (sums to 1)."""
    return jnp.einsum("bi,bin->bn", jax.nn.softmax(self.w_logits(x), axis=-1), self.selectors(x))

  def __call__(self, x: jax.Array, experts: jax.Array) -> jax.Array:
    return jnp.einsum("be,bed->bd", self.expert_weights(x), experts)


class DSelectK(MultiTaskModel):
  """DSelect-k multi-task ranking model: MMoE with one :class:`DSelectGate` per task.

  Shared experts read the input embedding; task ``k``'s gate picks (softly, then, as its
  smooth-steps saturate, exactly) at most ``k`` of them and mixes them for task ``k``'s tower.
  The paper's optional entropy regulariser on the selectors (it speeds their saturation) is
  omitted: the loss is the tasks' losses alone, and the selectors saturate, or not, through
  training. Shared: embeddings, dense projection and the experts. Task-specific: each task's
  gate and tower.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width.
    n_experts: number of shared experts.
    expert_dims: widths of every expert MLP.
    tower_dims: widths of every task tower's MLP.
    k: selectors per task (the paper's default 2).
    gamma: width of the smooth-step (the paper's default 1.0).
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = DSelectK((5, 7), 2, 2, embed_dim=4, n_experts=4, expert_dims=(8,), tower_dims=(4,),
    ...              rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 2)

  References:
    Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi, "DSelect-k:
    Differentiable Selection in the Mixture of Experts with Applications to Multi-Task
    Learning", NeurIPS 2021. LibMTL's ``DSelect_k`` architecture (Lin and Zhang, JMLR 2023).
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    n_experts: int = 8,
    expert_dims: Sequence[int] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    k: int = 2,
    gamma: float = 1.0,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    if n_experts < 1:
      raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    d_in = self.features.out_dim
    self.experts = nnx.List(
      [MLP(d_in, expert_dims, norm=norm, dropout=dropout, rngs=rngs) for _ in range(n_experts)]
    )
    d_out = self.experts[0].out_dim
    self.gates = nnx.List(
      [DSelectGate(d_in, n_experts, k=k, gamma=gamma, rngs=rngs) for _ in range(self.n_tasks)]
    )
    self.towers = nnx.List(
      [Tower(d_out, tower_dims, norm=norm, dropout=dropout, rngs=rngs) for _ in range(self.n_tasks)]
    )

  def _is_shared(self, path: tuple) -> bool:
    return path[0] in ("features", "experts")

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    x = self.features(categorical, numerical)
    experts = jnp.stack([expert(x) for expert in self.experts], axis=1)  # (B, E, D)
    return jnp.stack(
      [tower(gate(x, experts)) for gate, tower in zip(self.gates, self.towers)], axis=-1
    )
