"""Per-task gradients of a vector of task losses: one forward pass, then K VJPs.

The K backward passes share the forward pass's residuals. They run either as one
``jax.vmap`` of the VJP over the rows of the K×K identity (batched matmuls, the best
shape for accelerators) or as K calls of the same VJP in one program (``"loop"``);
``"auto"`` picks by the platform the program is lowered for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

# What strategy "auto" runs on CPU (accelerators always take "vmap"); "loop" is the same
# program with the K VJPs unrolled: XLA:CPU runs K unbatched backward passes faster than one
# batched (vmapped) one; accelerators favour the batched matmuls.
_CPU_STRATEGY = "loop"


STRATEGIES = ("auto", "vmap", "loop")


def _stack(rows: list) -> Any:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)


def _vmap_vjp(vjp_fn: Callable, eye: jax.Array) -> Any:
  return jax.vmap(vjp_fn)(eye)


def _loop_vjp(vjp_fn: Callable, eye: jax.Array) -> Any:
  return _stack([vjp_fn(eye[k]) for k in range(eye.shape[0])])


def value_and_task_grads(
  fun: Callable,
  argnums: int | Sequence[int] = 0,
  has_aux: bool = False,
  strategy: str = "auto",
) -> Callable:
  r"""Like ``jax.value_and_grad`` for a function that returns K task losses.

  The forward pass runs once; the K gradients are the VJPs of the rows of the
  K×K identity, :math:`\nabla_\theta L_k = e_k^\top J` with
  :math:`J = \partial L / \partial \theta`, so every leaf of the result has a
  leading task axis: ``(K, *param_shape)``.

  Args:
    fun: function returning a ``(K,)`` vector of task losses (or ``(losses, aux)``
      with ``has_aux=True``).
    argnums: which positional argument(s) to differentiate.
    has_aux: whether ``fun`` returns ``(losses, aux)``.
    strategy: how the K VJPs run: ``"vmap"`` (one ``jax.vmap`` of the VJP),
      ``"loop"`` (K calls of the same VJP, unrolled in one program) or ``"auto"``
      (chosen with :func:`jax.lax.platform_dependent` by the platform the program
      is lowered for: ``_CPU_STRATEGY`` on CPU, ``"vmap"`` elsewhere). All give the
      same gradients up to rounding.

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
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be 'auto', 'vmap' or 'loop', got {strategy!r}")
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
    eye = jnp.eye(k, dtype=losses.dtype)
    if strategy == "vmap" or (strategy == "auto" and _CPU_STRATEGY == "vmap"):
      grads = _vmap_vjp(vjp_fn, eye)
    elif strategy == "loop":
      grads = _loop_vjp(vjp_fn, eye)
    else:
      grads = jax.lax.platform_dependent(
        eye, cpu=lambda e: _loop_vjp(vjp_fn, e), default=lambda e: _vmap_vjp(vjp_fn, e)
      )
    grads = grads[0] if single else grads
    return ((losses, aux) if has_aux else losses), grads

  return wrapped
