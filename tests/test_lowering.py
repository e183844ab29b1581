"""What the solvers lower to on each platform, checked on this CPU-only machine.

``lowered_text`` lowers a function for a platform that need not be present
(``lowering_platforms``), and ``count_ops`` counts the operations that decide how a
program runs on an accelerator: ``stablehlo.while`` loops (each trip sends the loop
condition to the host), ``stablehlo.case`` whose branch index is computed at run time,
and ``custom_call`` targets (library calls such as cuSOLVER or LAPACK).
"""

import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax import nash_weights
from pub_optax.weightings import nash

NASH_LOOP_FREE_SIZES = (2, 4, 8, 16)
_CASE = re.compile(r'"stablehlo\.case"\((%[\w#]+)\)')
_DEF = r"^\s*{name}(?::\d+)? = (.*)$"


def lowered_text(fn, *args, platform: str) -> str:
  """The StableHLO text of ``jax.jit(fn)(*args)`` lowered for ``platform`` ("cpu", "cuda", "tpu")."""
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _runtime_cases(text: str) -> int:
  """``stablehlo.case`` ops whose index is not a constant (nor another such case's result)."""
  count = 0
  for match in _CASE.finditer(text):
    before = text[: match.start()]
    defs = re.findall(_DEF.format(name=re.escape(match.group(1))), before, flags=re.M)
    source = defs[-1] if defs else ""
    if not (source.startswith("stablehlo.constant") or source.startswith('"stablehlo.case"')):
      count += 1
  return count


def count_ops(text: str) -> dict:
  """Counts of ``stablehlo.while``, ``stablehlo.case`` (all, and with a run-time index as
  ``"runtime_case"``), ``custom_call`` (all) and ``custom_call:<target>`` per target."""
  targets = Counter(re.findall(r"custom_call\s*@([\w.$-]+)", text))
  counts = {
    "stablehlo.while": text.count("stablehlo.while"),
    "stablehlo.case": len(_CASE.findall(text)),
    "runtime_case": _runtime_cases(text),
    "custom_call": sum(targets.values()),
  }
  counts.update({f"custom_call:{name}": n for name, n in targets.items()})
  return counts


def _solver_calls(counts: dict) -> list:
  return [t for t in counts if re.search(r"cusolver|lapack|cublas|potrf|getrf|trsm", t)]


def _gram(k: int):
  rows = np.random.default_rng(k).standard_normal((k, k + 2))
  return jnp.asarray(rows @ rows.T, jnp.float32)


def _assert_loop_free(counts: dict) -> None:
  assert counts["stablehlo.while"] == 0, counts
  assert counts["runtime_case"] == 0, counts
  assert not _solver_calls(counts), counts


def _lower_or_skip(fn, *args, platform):
  try:
    return lowered_text(fn, *args, platform=platform)
  except Exception as err:  # a jaxlib without that platform's lowering rules
    pytest.skip(f"cannot lower for {platform} here: {type(err).__name__}: {err}")


def _weigh(gram, state):
  return nash().weigh(gram, state, None).weights


@pytest.mark.parametrize("k", NASH_LOOP_FREE_SIZES)
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_nash_has_no_loop_and_no_solver_call_on_accelerators(platform, k):
  g = _gram(k)
  _assert_loop_free(count_ops(_lower_or_skip(nash_weights, g, platform=platform)))
  batched = jax.vmap(nash_weights)
  _assert_loop_free(count_ops(_lower_or_skip(batched, g[None].repeat(3, 0), platform=platform)))
  warm = jnp.ones((k,), jnp.float32)  # the weighting warm-starts from its state
  _assert_loop_free(count_ops(_lower_or_skip(_weigh, g, warm, platform=platform)))


@pytest.mark.parametrize("k", NASH_LOOP_FREE_SIZES[1:])
def test_nash_keeps_its_loop_on_cpu(k):
  counts = count_ops(lowered_text(nash_weights, _gram(k), platform="cpu"))
  assert counts["stablehlo.while"] == 1, counts
  assert any("potrf" in t for t in counts), counts


def test_nash_two_tasks_is_a_closed_form_everywhere():
  for platform in ("cpu", "cuda"):
    _assert_loop_free(count_ops(lowered_text(nash_weights, _gram(2), platform=platform)))


def test_nash_above_the_cutoff_loops_everywhere():
  counts = count_ops(lowered_text(nash_weights, _gram(32), platform="cuda"))
  assert counts["stablehlo.while"] == 1, counts


def test_count_ops_reads_a_known_program():
  def f(x):
    y = jax.lax.while_loop(lambda c: c[0] < 3.0, lambda c: c + 1.0, x)
    return jnp.linalg.cholesky(jnp.outer(y, y) + jnp.eye(2))

  counts = count_ops(lowered_text(f, jnp.ones(2), platform="cpu"))
  assert counts["stablehlo.while"] == 1
  assert counts["custom_call"] >= 1 and _solver_calls(counts), counts
  assert counts["runtime_case"] == 0
  branch = count_ops(
    lowered_text(
      lambda x: jax.lax.cond(x[0] > 0, jnp.sin, jnp.cos, x), jnp.ones(2), platform="cuda"
    )
  )
  assert branch["runtime_case"] == 1, branch
