"""Nash solver benchmark: jitted Newton (pub_optax.nash_weights) vs the cvxpy CCP of Nash-MTL.

For each K it builds Gram matrices of random task vectors with some conflict
(D = K × P, P = 1000: a shared direction every task leans on, a second direction that
half the tasks follow and half oppose, independent noise, task norms within 10×) and
measures, on the same matrices:

* ``newton_us``: one jitted ``nash_weights`` call (float32, the package default), after
  warm-up, ``block_until_ready``; median over many calls cycling through the matrices.
* ``loop_free_us``: the same call forced onto the loop-free path that accelerators run
  for K <= 16 (fixed Newton budget, unrolled Cholesky; the closed form at K = 2), on
  this machine; ``loop_free_ratio`` = loop_free_us / newton_us, and ``err_loop_free``
  its max relative difference from the loop path's weights.
* ``batch_us``: the same solver ``jax.vmap``-ed over a batch, time per solve (throughput).
* ``ccp_ms``: the Nash-MTL concave-convex procedure with the original settings
  (``NashCCP.nash_mtl``: 20 iterations, its stop rule, one conic solve per iteration,
  a non-DPP problem re-canonicalised at every solve), cold-started from ones as at the
  first training step; ``ccp_dpp_ms`` is the same procedure in DPP form.
* ``speedup`` = ccp_ms / newton_us (target: >= 300x at every K).
* ``err_f32`` / ``err_f64``: max relative difference of the Newton weights from the tight
  CCP reference (``NashCCP(K)``, residual <= 1e-8) over the matrices (goal <= 1e-4);
  ``err_nash_mtl``: the same for the original-settings CCP.

Usage (from the repository root, package installed):
  python benchmarks/solver.py [--quick] [--json PATH]
  python benchmarks/solver.py --loop-free-only  # loop vs loop-free Newton, no CCP, seconds
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

try:  # python -m benchmarks.solver
  from benchmarks import common
except ImportError:  # python benchmarks/solver.py
  import common  # type: ignore[no-redef]

import pub_optax
from pub_optax.testing import NashCCP
from pub_optax.weightings import _nash

SPEEDUP_GOAL = 300.0
AGREEMENT_GOAL = 1e-4

FULL = dict(
  sizes=(2, 4, 8, 16, 40, 64),
  num_matrices=5,
  newton_repeats=300,
  batch_size=1024,
  batch_repeats=20,
  ccp_repeats=10,  # timed CCP calls per K, cycling through the matrices
  ccp_repeats_large=5,  # for K >= 40, where one original-settings call takes seconds
)
QUICK = dict(
  sizes=(2, 8, 40),
  num_matrices=2,
  newton_repeats=50,
  batch_size=128,
  batch_repeats=5,
  ccp_repeats=2,
  ccp_repeats_large=2,
)


def conflicting_grams(rng: np.random.Generator, k: int, n: int, p: int = 1000) -> np.ndarray:
  """``n`` Gram matrices ``D Dᵀ`` of ``k`` task vectors in R^p with some conflict.

  Row k is ``s_k (a_k u + b_k v + sqrt(1 - a_k² - b_k²) z_k)·sqrt(p)`` with u, v, z_k
  orthonormal-ish random unit vectors, a_k ~ U(0.2, 0.7) (shared component),
  b_k = ±U(0.2, 0.6) with random sign (half the tasks oppose the other half), and
  s_k log-uniform in [0.3, 3]: entries of unit scale, pairwise cosines in about
  [-0.3, 0.85], well-conditioned.
  """
  grams = []
  for _ in range(n):
    basis = rng.standard_normal((2, p))
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    noise = rng.standard_normal((k, p))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    a = rng.uniform(0.2, 0.7, size=k)
    b = rng.uniform(0.2, 0.6, size=k) * rng.choice([-1.0, 1.0], size=k)
    rest = np.sqrt(np.clip(1.0 - a**2 - b**2, 0.05, None))
    rows = a[:, None] * basis[0] + b[:, None] * basis[1] + rest[:, None] * noise
    rows *= np.sqrt(p) * np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=(k, 1)))
    grams.append(rows @ rows.T)
  return np.stack(grams)


def _cycling(fn, inputs):
  """A zero-argument callable that applies fn to the inputs in turn."""
  it = itertools.cycle(inputs)
  return lambda: fn(next(it))


def _max_rel(a: np.ndarray, ref: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref) / np.abs(ref)))


def _nash_path(loop_free: bool):
  return jax.jit(
    functools.partial(_nash._solve, init=None, max_iter=64, ridge=None, loop_free=loop_free)
  )


def bench_loop_free(k: int, grams: np.ndarray, repeats: int) -> dict:
  """Loop vs loop-free Newton on this machine (float32, one call at a time); {} above the cutoff."""
  if k > _nash.LOOP_FREE_MAX_K:
    return {}
  dev32 = [jnp.asarray(g.astype(np.float32)) for g in grams]
  row = {}
  for name, loop_free in (("loop", False), ("loop_free", True)):
    solve = _nash_path(loop_free)
    row[f"{name}_weights"] = np.stack([np.asarray(solve(g).weights, np.float64) for g in dev32])
    t = common.time_fn(_cycling(solve, dev32), repeats=repeats, warmup=3)
    row[f"{name}_us"] = t["median_s"] * 1e6
  row["err_loop_free"] = _max_rel(row.pop("loop_free_weights"), row.pop("loop_weights"))
  row["loop_free_ratio"] = row["loop_free_us"] / row["loop_us"]
  return row


def bench_size(k: int, cfg: dict, rng: np.random.Generator) -> dict:
  n = cfg["num_matrices"]
  grams = conflicting_grams(rng, k, n)
  row: dict = dict(K=k, num_matrices=n)
  row.update(bench_loop_free(k, grams, cfg["newton_repeats"]))

  # Tight CCP reference (DPP, trust region, residual <= 1e-8).
  tight = NashCCP(k)
  refs = [tight.solve(g) for g in grams]
  if not all(r.converged for r in refs):
    print(f"warning: tight CCP did not converge for K={k}", file=sys.stderr)
  ref_w = np.stack([r.weights for r in refs])
  row["ccp_tight_converged"] = all(r.converged for r in refs)
  row["ccp_tight_iterations_max"] = max(r.iterations for r in refs)
  ccp_repeats = cfg["ccp_repeats_large"] if k >= 40 else cfg["ccp_repeats"]
  t = common.time_fn(_cycling(tight.solve, grams), repeats=max(ccp_repeats, n), warmup=1)
  row["ccp_tight_ms"] = t["median_s"] * 1e3

  # Newton, float32 (package default), one jitted call at a time.
  solve = jax.jit(pub_optax.nash_weights)
  dev32 = [jnp.asarray(g.astype(np.float32)) for g in grams]
  res32 = [solve(g) for g in dev32]
  row["err_f32"] = max(_max_rel(r.weights, w) for r, w in zip(res32, ref_w))
  row["exact_f32"] = all(bool(r.exact) for r in res32)
  row["newton_iterations_max"] = max(int(r.iterations) for r in res32)
  t = common.time_fn(_cycling(solve, dev32), repeats=cfg["newton_repeats"], warmup=3)
  row["newton_us"] = t["median_s"] * 1e6
  row["newton_p10_us"], row["newton_p90_us"] = t["p10_s"] * 1e6, t["p90_s"] * 1e6

  # Newton, float64 (agreement, and its time for reference).
  with jax.enable_x64(True):
    solve64 = jax.jit(pub_optax.nash_weights)
    dev64 = [jnp.asarray(g) for g in grams]
    res64 = [solve64(g) for g in dev64]
    row["err_f64"] = max(_max_rel(r.weights, w) for r, w in zip(res64, ref_w))
    row["exact_f64"] = all(bool(r.exact) for r in res64)
    t = common.time_fn(_cycling(solve64, dev64), repeats=cfg["newton_repeats"], warmup=3)
    row["newton_f64_us"] = t["median_s"] * 1e6

  # Newton vmapped over a batch (throughput).
  b = cfg["batch_size"]
  batch = jnp.asarray(np.resize(grams.astype(np.float32), (b, k, k)))
  solve_batch = jax.jit(jax.vmap(pub_optax.nash_weights))
  t = common.time_fn(solve_batch, batch, repeats=cfg["batch_repeats"], warmup=2)
  row["batch_size"] = b
  row["batch_ms"] = t["median_s"] * 1e3
  row["batch_us"] = t["median_s"] / b * 1e6
  row["batch_solves_per_s"] = b / t["median_s"]

  # The CCP with the original Nash-MTL settings: as published (non-DPP), and DPP.
  for name, ccp in (
    ("ccp", NashCCP.nash_mtl(k)),
    ("ccp_dpp", NashCCP.nash_mtl(k, parameterized=True)),
  ):
    results = [ccp.solve(g) for g in grams]
    t = common.time_fn(_cycling(ccp.solve, grams), repeats=max(ccp_repeats, n), warmup=1)
    row[f"{name}_ms"] = t["median_s"] * 1e3
    row[f"{name}_p10_ms"], row[f"{name}_p90_ms"] = t["p10_s"] * 1e3, t["p90_s"] * 1e3
    row[f"{name}_iterations"] = [r.iterations for r in results]
    row[f"{name}_status"] = dict(collections.Counter(r.status for r in results))
    row[f"{name}_stopped_by_rule"] = sum(r.converged for r in results)
    row[f"err_nash_mtl{'_dpp' if name == 'ccp_dpp' else ''}"] = max(
      _max_rel(r.weights, w) for r, w in zip(results, ref_w)
    )
  row["ccp_solver"] = NashCCP.nash_mtl(k).solver

  row["speedup"] = row["ccp_ms"] * 1e3 / row["newton_us"]
  row["speedup_dpp"] = row["ccp_dpp_ms"] * 1e3 / row["newton_us"]
  row["speedup_batch"] = row["ccp_ms"] * 1e3 / row["batch_us"]
  row["speed_goal_met"] = row["speedup"] >= SPEEDUP_GOAL
  row["agreement_goal_met"] = max(row["err_f32"], row["err_f64"]) <= AGREEMENT_GOAL
  return row


COLUMNS = [
  ("K", "K"),
  ("newton_us", "newton f32 us", ".1f"),
  ("newton_f64_us", "f64 us", ".1f"),
  ("loop_free_us", "loop-free us", ".1f"),
  ("batch_us", "vmap us/solve", ".2f"),
  ("ccp_ms", "CCP orig ms", ".1f"),
  ("ccp_iters", "iters", ""),
  ("speedup", "speedup", ".0f"),
  ("ccp_dpp_ms", "CCP DPP ms", ".1f"),
  ("speedup_dpp", "vs DPP", ".0f"),
  ("ccp_tight_ms", "tight ms", ".1f"),
  ("err_f32", "err f32", ".1e"),
  ("err_f64", "err f64", ".1e"),
  ("err_nash_mtl", "err orig", ".1e"),
  ("goal", "goal", ""),
]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick", action="store_true", help="K in {2, 8, 40}, fewer repeats (< 2 min on 2 cores)"
  )
  parser.add_argument(
    "--json", metavar="PATH", help="write every figure and the configuration here"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--loop-free-only",
    action="store_true",
    help="only the loop vs loop-free Newton timings for K <= 16 (no CCP)",
  )
  args = parser.parse_args(argv)
  if args.loop_free_only:
    return loop_free_only(args.seed)

  cfg = dict(QUICK if args.quick else FULL)
  cfg.update(
    seed=args.seed,
    quick=args.quick,
    task_dim=1000,
    newton_dtype="float32",
    speedup_goal=SPEEDUP_GOAL,
    agreement_goal=AGREEMENT_GOAL,
    ccp_start="ones (cold, as the first Nash-MTL step)",
  )
  start = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  rows = []
  for k in cfg["sizes"]:
    t0 = time.perf_counter()
    row = bench_size(k, cfg, rng)
    row["ccp_iters"] = "/".join(str(i) for i in sorted(row["ccp_iterations"]))
    row["goal"] = "met" if row["speed_goal_met"] and row["agreement_goal_met"] else "MISSED"
    rows.append(row)
    print(f"K={k}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

  info = common.machine_info(
    packages=("jax", "jaxlib", "numpy", "cvxpy", "clarabel", "ecos", "optax")
  )
  summary = dict(
    speed_goal_met=all(r["speed_goal_met"] for r in rows),
    agreement_goal_met=all(r["agreement_goal_met"] for r in rows),
    min_speedup=min(r["speedup"] for r in rows),
    min_speedup_dpp=min(r["speedup_dpp"] for r in rows),
    max_err_f32=max(r["err_f32"] for r in rows),
    max_err_f64=max(r["err_f64"] for r in rows),
    max_err_nash_mtl=max(r["err_nash_mtl"] for r in rows),
  )
  wall = time.perf_counter() - start
  print(
    f"\nNash solver: Newton (jax, {info.get('jax_backend')}) vs cvxpy CCP "
    f"(Nash-MTL settings, {rows[0]['ccp_solver']}); {info['cpu_model']}, {info['cpu_count']} cores"
  )
  common.print_table(rows, COLUMNS)
  print(
    f"\nspeedup >= {SPEEDUP_GOAL:.0f}x at every K: {summary['speed_goal_met']} "
    f"(min {summary['min_speedup']:.0f}x; {summary['min_speedup_dpp']:.0f}x against the DPP form)"
  )
  print(
    f"weights within {AGREEMENT_GOAL:g} relative of the tight CCP: {summary['agreement_goal_met']} "
    f"(max f32 {summary['max_err_f32']:.1e}, f64 {summary['max_err_f64']:.1e}; "
    f"original-settings CCP itself: {summary['max_err_nash_mtl']:.1e})"
  )
  print(f"wall time {wall:.1f}s")
  if args.json:
    common.write_json(
      args.json,
      dict(benchmark="solver", config=cfg, machine=info, summary=summary, rows=rows, wall_s=wall),
    )
    print(f"wrote {args.json}")
  return 0


LOOP_FREE_COLUMNS = [
  ("K", "K"),
  ("loop_us", "loop us", ".1f"),
  ("loop_free_us", "loop-free us", ".1f"),
  ("loop_free_ratio", "loop-free / loop", ".2f"),
  ("err_loop_free", "max rel diff", ".1e"),
]


def loop_free_only(seed: int) -> int:
  """Loop vs loop-free Newton per K on this machine (float32): the table behind the CPU choice."""
  rng = np.random.default_rng(seed)
  rows = []
  for k in (2, 3, 4, 8, 16):
    rows.append(dict(K=k, **bench_loop_free(k, conflicting_grams(rng, k, 5), repeats=200)))
  info = common.machine_info()
  print(f"Nash Newton, loop vs loop-free (jax, {info.get('jax_backend')}); {info['cpu_model']}")
  common.print_table(rows, LOOP_FREE_COLUMNS)
  return 0


if __name__ == "__main__":
  sys.exit(main())
