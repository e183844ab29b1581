"""The functional form of a model for jitted train steps: split once, then a pure ``apply``.

``nnx.split(model, nnx.Param, ...)`` gives ``(graphdef, params, rest)``; ``rest`` holds the
BatchNorm statistics and the dropout RNG state. :func:`apply` is a pure function of those, so
it composes with ``jax.jit``, ``jax.vjp`` and ``jax.vmap`` (per-task gradients), and returns the
updated ``rest`` as auxiliary output. Train or eval mode is part of ``graphdef``: call
``model.train()`` or ``model.eval()`` before splitting.
"""

from __future__ import annotations

from flax import nnx


def split(model: nnx.Module):
  """Split a model into ``(graphdef, params, rest)``: ``nnx.split(model, nnx.Param, ...)``.

  Args:
    model: an NNX module.

  Returns:
    The graph definition, the ``nnx.Param`` state and the state of everything else.

  Example:
    >>> from flax import nnx
    >>> graphdef, params, rest = split(nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    >>> sorted(params.keys()), sorted(rest.keys())
    (['bias', 'scale'], ['mean', 'var'])
  """
  return nnx.split(model, nnx.Param, ...)


def apply(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, *inputs):
  """Run a split model as a pure function: ``model(*inputs)``.

  Args:
    graphdef: from :func:`split`.
    params: the ``nnx.Param`` state (what gradients are taken with respect to).
    rest: the other state (BatchNorm statistics, dropout RNG counters).
    *inputs: the model's inputs, e.g. ``(categorical, numerical)`` for the ranking
      models: ``(B, n_fields)`` integer ids and ``(B, n_numerical)`` dense features.

  Returns:
    ``(logits, new_rest)``: the model's logits and ``rest`` after the call (new batch
    statistics and advanced RNG counters in train mode; unchanged in eval mode).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from pub_optax.ranking.models import SharedBottom
    >>> m = SharedBottom((5,), 2, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,),
    ...                  rngs=nnx.Rngs(0))
    >>> graphdef, params, rest = split(m)
    >>> logits, rest = jax.jit(apply, static_argnums=0)(
    ...     graphdef, params, rest, jnp.zeros((3, 1), jnp.int32), jnp.ones((3, 2)))
    >>> logits.shape
    (3, 2)
  """
  # copy=True: fresh Variables at the current trace level, so BatchNorm can update its
  # statistics under jax.vjp/grad, and the caller's ``rest`` is never mutated in place.
  model = nnx.merge(graphdef, params, rest, copy=True)
  logits = model(*inputs)
  _, _, new_rest = nnx.split(model, nnx.Param, ...)
  return logits, new_rest
