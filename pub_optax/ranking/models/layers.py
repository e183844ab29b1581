"""Building blocks shared by the ranking models: input embedding, MLP blocks, towers, gates.

Every hidden block is ``Linear -> Norm -> ReLU -> Dropout``, the layout of the common PyTorch
multi-task ranking libraries. ``norm`` picks the normalisation: ``"batch"`` (BatchNorm with
PyTorch's default momentum, i.e. ``momentum=0.9`` in Flax's convention), ``"layer"`` or ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

NORMS = ("batch", "layer", None)


def _check_norm(norm: str | None) -> None:
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class MLP(nnx.Module):
  """A stack of ``Linear -> Norm -> ReLU -> Dropout`` blocks.

  Args:
    in_dim: input width.
    dims: hidden widths, one block each; the output width is ``dims[-1]``.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate after every block (0 disables dropout).
    rngs: NNX random streams (``params``, and ``dropout`` or ``default``).

  Returns:
    A module mapping ``(B, in_dim)`` to ``(B, dims[-1])``.

  Example:
    >>> from flax import nnx
    >>> mlp = MLP(4, (8, 2), norm="layer", dropout=0.0, rngs=nnx.Rngs(0))
    >>> mlp(jnp.ones((3, 4))).shape
    (3, 2)
  """

  def __init__(
    self,
    in_dim: int,
    dims: Sequence[int],
    *,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    _check_norm(norm)
    if not dims:
      raise ValueError("MLP needs at least one hidden width")
    layers = []
    for width in dims:
      layers.append(nnx.Linear(in_dim, width, rngs=rngs))
      if norm == "batch":
        layers.append(nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs))
      elif norm == "layer":
        layers.append(nnx.LayerNorm(width, rngs=rngs))
      layers.append(nnx.relu)
      if dropout > 0:
        layers.append(nnx.Dropout(dropout, rngs=rngs))
      in_dim = width
    self.layers = nnx.List(layers)
    self.out_dim = in_dim

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return x


class Tower(nnx.Module):
  """A task tower: an :class:`MLP` followed by a linear map to one logit.

  Args:
    in_dim: input width.
    dims: hidden widths of the MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module mapping ``(B, in_dim)`` to logits of shape ``(B,)``.

  Example:
    >>> from flax import nnx
    >>> Tower(4, (8,), dropout=0.0, norm=None, rngs=nnx.Rngs(0))(jnp.ones((3, 4))).shape
    (3,)
  """

  def __init__(
    self,
    in_dim: int,
    dims: Sequence[int],
    *,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.mlp = MLP(in_dim, dims, norm=norm, dropout=dropout, rngs=rngs)
    self.out = nnx.Linear(self.mlp.out_dim, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(self.mlp(x))[..., 0]


class Gate(nnx.Module):
  """Softmax gate: mixes stacked expert outputs with input-dependent weights.

  Args:
    in_dim: width of the gate's selector input.
    n_experts: number of experts it mixes.
    rngs: NNX random streams.

  Returns:
    A module ``gate(x, experts)`` with ``x: (B, in_dim)``, ``experts: (B, n_experts, D)``
    returning ``(B, D)``.

  Example:
    >>> from flax import nnx
    >>> Gate(4, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 4)), jnp.ones((2, 3, 5))).shape
    (2, 5)
  """

  def __init__(self, in_dim: int, n_experts: int, *, rngs: nnx.Rngs):
    self.logits = nnx.Linear(in_dim, n_experts, rngs=rngs)

  def __call__(self, x: jax.Array, experts: jax.Array) -> jax.Array:
    weights = jax.nn.softmax(self.logits(x), axis=-1)
    return jnp.einsum("be,bed->bd", weights, experts)


class FeatureEmbedding(nnx.Module):
  """Model input: one embedding table per categorical field plus a projection of dense features.

  The output concatenates the ``n_fields`` embeddings and, when ``n_numerical > 0``, a linear
  projection of the dense features to ``embed_dim``: width ``(n_fields + [n_numerical > 0]) *
  embed_dim``. Input shapes are checked at trace time.

  Args:
    cardinalities: number of ids of every categorical field.
    n_numerical: number of dense features (may be 0).
    embed_dim: embedding width.
    rngs: NNX random streams.

  Returns:
    A module ``features(categorical, numerical) -> (B, out_dim)``.

  Example:
    >>> from flax import nnx
    >>> emb = FeatureEmbedding((5, 7), 3, 4, rngs=nnx.Rngs(0))
    >>> emb(jnp.zeros((2, 2), jnp.int32), jnp.ones((2, 3))).shape
    (2, 12)
  """

  def __init__(
    self, cardinalities: Sequence[int], n_numerical: int, embed_dim: int, *, rngs: nnx.Rngs
  ):
    cardinalities = tuple(int(c) for c in cardinalities)
    if not cardinalities or min(cardinalities) < 1:
      raise ValueError(
        f"cardinalities must be a non-empty list of positive ints, got {cardinalities}"
      )
    if n_numerical < 0:
      raise ValueError(f"n_numerical must be >= 0, got {n_numerical}")
    self.cardinalities = cardinalities
    self.n_numerical = int(n_numerical)
    self.tables = nnx.List([nnx.Embed(c, embed_dim, rngs=rngs) for c in cardinalities])
    self.dense = nnx.Linear(n_numerical, embed_dim, rngs=rngs) if n_numerical else None
    self.out_dim = (len(cardinalities) + (1 if n_numerical else 0)) * embed_dim

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    categorical = jnp.asarray(categorical)
    n_fields = len(self.cardinalities)
    if categorical.ndim != 2 or categorical.shape[1] != n_fields:
      raise ValueError(f"categorical must have shape (batch, {n_fields}), got {categorical.shape}")
    if not jnp.issubdtype(categorical.dtype, jnp.integer):
      raise ValueError(f"categorical must hold integer ids, got dtype {categorical.dtype}")
    if numerical is None:
      numerical = jnp.zeros((categorical.shape[0], 0), jnp.float32)
    numerical = jnp.asarray(numerical, jnp.float32)
    if numerical.ndim != 2 or numerical.shape[1] != self.n_numerical:
      raise ValueError(
        f"numerical must have shape (batch, {self.n_numerical}), got {numerical.shape}"
      )
    if numerical.shape[0] != categorical.shape[0]:
      raise ValueError(
        f"batch sizes differ: categorical {categorical.shape[0]}, numerical {numerical.shape[0]}"
      )
    parts = [table(categorical[:, f]) for f, table in enumerate(self.tables)]
    if self.dense is not None:
      parts.append(self.dense(numerical))
    return jnp.concatenate(parts, axis=-1)
