"""Per-task gradients of a vector of task losses: one forward pass, one vmapped VJP."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def value_and_task_grads(
  fun: Callable,
  argnums: int | Sequence[int] = 0,
  has_aux: bool = False,
) -> Callable:
  """Like ``jax.value_and_grad`` for a function that returns K task losses.

  The forward pass runs once; the K gradients come from one ``jax.vmap`` of the
  VJP over the rows of the K×K identity, so every leaf of the result has a
  leading task axis: ``(K, *param_shape)``.

  Args:
    fun: function returning a ``(K,)`` vector of task losses (or ``(losses, aux)``
      with ``has_aux=True``).
    argnums: which positional argument(s) to differentiate.
    has_aux: whether ``fun`` returns ``(losses, aux)``.

  Returns:
    A function with ``fun``'s signature returning ``(losses, task_grads)`` or
    ``((losses, aux), task_grads)``; ``task_grads`` mirrors the differentiated
    argument(s) (a tuple of them when ``argnums`` is a sequence).

  Example:
    >>> import jax.numpy as jnp, pub_optax
    >>> f = lambda w: jnp.stack([jnp.sum(w ** 2), jnp.sum(3.0 * w)])
    >>> losses, grads = pub_optax.value_and_task_grads(f)(jnp.array([1.0, 2.0]))
    >>> grads.tolist()
    [[2.0, 4.0], [3.0, 3.0]]
  """
  single = isinstance(argnums, int)
  positions = (argnums,) if single else tuple(argnums)
  if not positions:
    raise ValueError("argnums must name at least one argument")

  def wrapped(*args, **kwargs):
    for i in positions:
      if not -len(args) <= i < len(args):
        raise ValueError(
          f"argnums={argnums} but the function was called with {len(args)} positional arguments"
        )

    def partial(*diff):
      full = list(args)
      for i, d in zip(positions, diff):
        full[i] = d
      return fun(*full, **kwargs)

    diff_args = [args[i] for i in positions]
    if has_aux:
      out = jax.vjp(partial, *diff_args, has_aux=True)
      losses, vjp_fn, aux = out
    else:
      losses, vjp_fn = jax.vjp(partial, *diff_args)
    if not hasattr(losses, "ndim") or losses.ndim != 1:
      raise ValueError(
        f"fun must return a vector of K task losses with shape (K,), got shape {jnp.shape(losses)}"
        + (" (with has_aux=True it must return (losses, aux))" if has_aux else "")
      )
    k = losses.shape[0]
    if k == 0:
      raise ValueError("fun returned zero task losses (K = 0)")
    grads = jax.vmap(vjp_fn)(jnp.eye(k, dtype=losses.dtype))
    grads = grads[0] if single else grads
    return ((losses, aux) if has_aux else losses), grads

  return wrapped
