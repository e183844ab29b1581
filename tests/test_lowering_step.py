"""A whole PUB training step, lowered for accelerators on this CPU-only machine.

The default PUB step (value_and_task_grads, vmapped Adam look-aheads, Gram matrix, Nash solve,
weighted sum, committed Adam step) must lower for CUDA (and TPU when it lowers) with no
``stablehlo.while`` (each trip would send the loop condition to the host), no run-time
``stablehlo.case``, no solver library call, and the matmul Gram reduction rather than the CPU's
lanes or blocks; on CPU the solver keeps its loop.
"""

import jax.numpy as jnp
import optax
import pytest
from test_lowering import _solver_calls, count_ops, lowered_text

import pub_optax

LANES = 1 << 15  # leaves at least this long take a CPU Gram reduction (lanes or blocks)


def _step(k: int):
  params = {"table": jnp.zeros((LANES, 4)), "w": jnp.zeros((4, 8)), "heads": jnp.zeros((k, 8))}
  tx = pub_optax.pub_adam(1e-3, num_tasks=k, shared={"table": True, "w": True, "heads": False})
  ids = jnp.arange(64) % LANES

  def losses(p, ids):
    h = jnp.tanh(p["table"][ids] @ p["w"])
    return jnp.mean((h @ p["heads"].T - jnp.arange(k)) ** 2, axis=0)

  def step(p, state, ids):
    _, g = pub_optax.value_and_task_grads(losses)(p, ids)
    u, state = tx.update(g, state, p)
    return optax.apply_updates(p, u), state

  return step, (params, tx.init(params), ids)


@pytest.mark.parametrize("k", [2, 8, 16])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_pub_step_has_no_loop_and_no_solver_call_on_accelerators(platform, k):
  step, args = _step(k)
  try:
    text = lowered_text(step, *args, platform=platform)
  except (ValueError, NotImplementedError, RuntimeError) as err:
    pytest.skip(f"does not lower for {platform} here: {err}")
  counts = count_ops(text)
  assert counts["stablehlo.while"] == 0, counts
  assert counts["runtime_case"] == 0, counts
  assert _solver_calls(counts) == [], counts
  assert "stablehlo.dot_general" in text


@pytest.mark.parametrize("k", [8])
def test_pub_step_on_cpu_keeps_the_solver_loop(k):
  step, args = _step(k)
  counts = count_ops(lowered_text(step, *args, platform="cpu"))
  assert counts["stablehlo.while"] >= 1, counts
