"""ESMM: CTR and CVR towers on shared embeddings, CTCVR = CTR x CVR over the entire space (Ma et al., SIGIR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import FeatureEmbedding, Tower


def product_logit(a: jax.Array, b: jax.Array) -> jax.Array:
  """Logit of ``sigmoid(a) * sigmoid(b)``, computed in log space.

  With ``p = σ(a)σ(b)``: ``log p = log σ(a) + log σ(b)`` and, since ``1 - p = σ(-a) +
  σ(a)σ(-b)``, ``log(1 - p) = logaddexp(log σ(-a), log σ(a) + log σ(-b))``. Unlike
  ``log1mexp(log p)`` this never rounds ``1 - p`` to zero, so it is finite for any finite
  inputs (e.g. ``a = b = 200`` gives ``200 - log 2``).

  Args:
    a: first logit.
    b: second logit, broadcastable with ``a``.

  Returns:
    ``log p - log(1 - p)``, same shape as the broadcast inputs.

  Example:
    >>> float(jax.nn.sigmoid(product_logit(jnp.array(1.0), jnp.array(2.0))))  # doctest: +ELLIPSIS
    0.6439...
  """
  log_sa, log_sb = jax.nn.log_sigmoid(a), jax.nn.log_sigmoid(b)
  log_p = log_sa + log_sb
  log_1mp = jnp.logaddexp(jax.nn.log_sigmoid(-a), log_sa + jax.nn.log_sigmoid(-b))
  return log_p - log_1mp


class ESMM(MultiTaskModel):
  """Entire Space Multi-task Model: outputs ``[logit pCTR, logit pCTCVR]``.

  Two towers read the shared embeddings: a CTR tower with logit ``a`` and a CVR tower with
  logit ``b``. Output 0 is ``a``; output 1 is the logit of ``pCTCVR = σ(a)·σ(b)``
  (:func:`product_logit`), so both are trained on all impressions with the click and the
  click-and-convert labels. pCVR itself is ``σ(tower_logits(...)[:, 1])``.

  Shared: embeddings, dense projection and the CTR tower (it feeds both outputs).
  Task-specific: the CVR tower (task 1).

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: must be 2 (CTR, CTCVR).
    embed_dim: embedding width.
    bottom_dims: first widths of each tower's MLP.
    tower_dims: remaining widths of each tower's MLP (a tower is ``bottom_dims + tower_dims``).
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, 2)``.

  Example:
    >>> from flax import nnx
    >>> m = ESMM((5, 7), 2, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,), rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 2)
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    bottom_dims: Sequence[int] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    if n_tasks != 2:
      raise ValueError(f"ESMM models exactly 2 tasks (CTR, CTCVR); got n_tasks={n_tasks}")
    self.n_tasks = 2
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    dims = tuple(bottom_dims) + tuple(tower_dims)
    d_in = self.features.out_dim
    self.ctr_tower = Tower(d_in, dims, norm=norm, dropout=dropout, rngs=rngs)
    self.cvr_tower = Tower(d_in, dims, norm=norm, dropout=dropout, rngs=rngs)

  def _is_shared(self, path: tuple) -> bool:
    return path[0] in ("features", "ctr_tower")

  def tower_logits(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    """The two towers' own logits ``[a (CTR), b (CVR)]``, shape ``(B, 2)``."""
    x = self.features(categorical, numerical)
    return jnp.stack([self.ctr_tower(x), self.cvr_tower(x)], axis=-1)

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    ab = self.tower_logits(categorical, numerical)
    a, b = ab[:, 0], ab[:, 1]
    return jnp.stack([a, product_logit(a, b)], axis=-1)
