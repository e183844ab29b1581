"""The PUB paper's toy (Fig. 2) for every registered method: final losses, joint optimum, Pareto front, paths.

Two losses of ``x = (x1, x2)`` (``pub_optax.toy``), five starts, Adam-based methods at lr 1e-3
for 35,000 steps, run jitted and vmapped over the starts in float64 and float32. Every name in
``pub_optax.method_names()`` is run with its registry defaults (FAMO with the toy settings of
its official code, below), plus PUB under each scaling (``pub_rms``, ``pub_raw``,
``pub_convex``; ``pub`` is the default, convex) with its weights refreshed every step (the default) and every 10 steps
(``@10``, as the public PUB code does).

For each start the table shows the final ``(L1, L2)`` and a mark:
  ``O``  reached the joint optimum of L1 + L2: both losses within 0.1 of −15.09;
  ``P``  on the Pareto front but not at the joint optimum;
  ``-``  neither (stalled, or off the front).
"On the Pareto front" means no point of x ∈ [−10, 10]² improves *both* losses by more than
``FRONT_TOL`` = 0.05: the front is the non-dominated set of a 4001×4001 grid (spacing 0.005,
float64), and ``front_gap`` = max over front points of min(L1 − L1', L2 − L2') is reported too
(≤ 0 means no grid point dominates the final point; the grid's own error is about 0.01).

PUB with raw or rms weights keeps a step of norm √2·η on the front, so near the joint optimum
it wanders along the front and its end point depends chaotically on rounding: perturbing a
start by 1e-5, or running on another CPU instruction set, moves it anywhere from 0.002 to
about 0.6 from −15.09, in float64 as in float32. An ``O`` against a ``P`` for those rows is
therefore one sample of that spread; ``tests/test_toy.py`` bounds it with margin instead.

The paper's claims checked in ``summary``: PUB (raw Nash weights, refreshed every step)
reaches the joint optimum from all five starts; Nash-MTL, CAGrad, IMTL-G and FAMO stop at
start-dependent points of the Pareto front; Adam on the sum (``equal``) stalls from
(−8.5, 7.5) and (9, 9).

``--quick`` runs four methods (equal, pub_rms, nash_mtl, famo) for 5,000 steps: a smoke test of
the script, not the paper's setting (its numbers are not comparable to the paper's figure).

Usage (from the repository root, package installed):
  python benchmarks/toy.py [--quick] [--json PATH] [--png PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

try:  # python -m benchmarks.toy
  from benchmarks import common
except ImportError:  # python benchmarks/toy.py
  import common  # type: ignore[no-redef]

from pub_optax._methods import make_method, method_names
from pub_optax.toy import OPTIMUM_LOSS, STARTS, optimize, toy_losses

OPTIMUM_TOL = 0.1
FRONT_TOL = 0.05
LIMIT = 10.0
FRONT_GRID = 4001  # points per axis on [-10, 10]: spacing 0.005

# Toy-specific hyper-parameters. FAMO's losses must stay above min_losses (the toy's losses
# are negative, down to about -20); the official FAMO toy (experiments/toy/trainer.py, run.sh)
# uses min_losses = -21 for this unscaled loss and gamma = 0.
TOY_HYPER = {"famo": dict(min_losses=-21.0, gamma=0.0)}
PUB_SCALINGS = ("pub_rms", "pub_raw", "pub_convex")
QUICK_METHODS = ("equal", "pub_rms", "nash_mtl", "famo")
PAPER_STOPPERS = ("nash_mtl", "cagrad", "imtl_g", "famo")  # stop at Pareto points in Fig. 2

FULL = dict(
  num_steps=35_000, record_every=100, lr=1e-3, dtypes=("float64", "float32"), refresh=(1, 10)
)
QUICK = dict(
  num_steps=5_000, record_every=50, lr=1e-3, dtypes=("float64", "float32"), refresh=(1, 10)
)


def configs(quick: bool) -> list[dict]:
  """The runs: one per registered method (defaults), plus PUB scalings refreshed every 10 steps."""
  names = [n for n in method_names() if not quick or n in QUICK_METHODS]
  runs = [dict(label=n, method=n, hyper=dict(TOY_HYPER.get(n, {}))) for n in names]
  for n in PUB_SCALINGS:
    if n in names:
      runs.append(
        dict(label=f"{n}@10", method=n, hyper=dict(TOY_HYPER.get(n, {}), refresh_every=10))
      )
  return runs


def run_config(cfg: dict, dtype_name: str, num_steps: int, record_every: int, lr: float) -> dict:
  """Runs one method from all starts; returns final x, losses, path (starts prepended), wall time."""
  dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
  with jax.enable_x64(dtype_name == "float64"):
    tx = make_method(cfg["method"], lr, num_tasks=2, **cfg["hyper"])
    start = time.perf_counter()
    final, losses, path = optimize(tx, STARTS, num_steps, record_every=record_every, dtype=dtype)
    final, losses, path = jax.device_get((final, losses, path))
    wall = time.perf_counter() - start
  path = np.concatenate(
    [np.asarray(STARTS, np.float64)[:, None, :], np.asarray(path, np.float64)], axis=1
  )
  return dict(
    final_x=np.asarray(final, np.float64),
    losses=np.asarray(losses, np.float64),
    path=path,
    wall_s=wall,
  )


# ----------------------------------------------------------------------------- Pareto front


def _losses_np(x1, x2):
  """``toy_losses`` on numpy grids, in float64 (the package's formulas, vmapped)."""
  with jax.enable_x64(True):
    x = jnp.stack(
      [jnp.asarray(x1, jnp.float64).ravel(), jnp.asarray(x2, jnp.float64).ravel()], axis=1
    )
    l = np.asarray(jax.jit(jax.vmap(toy_losses))(x))
  return l[:, 0].reshape(np.shape(x1)), l[:, 1].reshape(np.shape(x1))


def _non_dominated(l1, l2, *others):
  """Indices-free staircase: the points no other point beats in both losses (sorted by L1)."""
  order = np.lexsort((l2, l1))
  l1, l2 = l1[order], l2[order]
  prev_min = np.minimum.accumulate(np.concatenate([[np.inf], l2[:-1]]))
  keep = l2 < prev_min
  return (l1[keep], l2[keep]) + tuple(o[order][keep] for o in others)


def pareto_front(n: int = FRONT_GRID, limit: float = LIMIT):
  """The non-dominated (L1, L2) and x of an n×n grid on [−limit, limit]², sorted by L1."""
  axis = np.linspace(-limit, limit, n)
  parts = []
  for rows in np.array_split(np.arange(n), 16):
    x1, x2 = np.meshgrid(axis, axis[rows], indexing="xy")
    x1, x2 = x1.ravel(), x2.ravel()
    l1, l2 = _losses_np(x1, x2)
    parts.append(_non_dominated(l1, l2, x1, x2))
  return _non_dominated(*(np.concatenate(p) for p in zip(*parts)))


def front_gap(losses: np.ndarray, front) -> np.ndarray:
  """max over front points of min(L1 − L1', L2 − L2'): how far a point is from the front."""
  f1, f2 = front[0], front[1]
  return np.array([np.max(np.minimum(a - f1, b - f2)) for a, b in losses])


# ----------------------------------------------------------------------------- report


def _mark(opt: bool, on_front: bool) -> str:
  return "O" if opt else ("P" if on_front else "-")


def make_rows(results: list[dict], front) -> list[dict]:
  rows = []
  for res in results:
    losses = res["losses"]
    finite = np.all(np.isfinite(losses), axis=1)
    opt = finite & np.all(np.abs(losses - OPTIMUM_LOSS) < OPTIMUM_TOL, axis=1)
    gap = np.where(finite, front_gap(np.nan_to_num(losses, nan=1e9), front), np.inf)
    on_front = finite & (gap < FRONT_TOL)
    rows.append(
      dict(
        method=res["label"],
        registry_name=res["method"],
        hyper=res["hyper"],
        dtype=res["dtype"],
        starts=[list(s) for s in STARTS],
        final_x=res["final_x"].tolist(),
        final_losses=losses.tolist(),
        reached_optimum=opt.tolist(),
        on_front=on_front.tolist(),
        front_gap=gap.tolist(),
        n_optimum=int(opt.sum()),
        n_front=int(on_front.sum()),
        wall_s=res["wall_s"],
        **{
          f"s{i}": f"{l[0]:7.2f},{l[1]:7.2f} {_mark(o, p)}"
          for i, (l, o, p) in enumerate(zip(losses, opt, on_front))
        },
      )
    )
  return rows


def summarize(rows: list[dict]) -> dict:
  by = {(r["method"], r["dtype"]): r for r in rows}
  out = {}
  for dtype in ("float64", "float32"):
    claims = {}
    pub = by.get(("pub_raw", dtype))
    if pub:
      claims["pub_raw_reaches_optimum_from_all_starts"] = pub["n_optimum"] == len(STARTS)
    for name in PAPER_STOPPERS:
      r = by.get((name, dtype))
      if r:
        front_l1 = [
          l[0]
          for l, p, o in zip(r["final_losses"], r["on_front"], r["reached_optimum"])
          if p and not o
        ]
        claims[f"{name}_stops_at_start_dependent_pareto_points"] = bool(
          r["n_front"] == len(STARTS)
          and r["n_optimum"] < len(STARTS)
          and len(front_l1) >= 2
          and np.ptp(front_l1) > 1.0
        )
    eq = by.get(("equal", dtype))
    if eq:
      stalled = [tuple(s) for s, o in zip(eq["starts"], eq["reached_optimum"]) if not o]
      claims["equal_stalls_from"] = stalled
      claims["equal_stalls_where_paper_says"] = stalled == [(-8.5, 7.5), (9.0, 9.0)]
    claims["methods_reaching_optimum_from_all_starts"] = [
      r["method"] for r in rows if r["dtype"] == dtype and r["n_optimum"] == len(STARTS)
    ]
    if claims:
      out[dtype] = claims
  return out


def plot(results: list[dict], front, path: str, title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  axis = np.linspace(-LIMIT, LIMIT, 401)
  x1, x2 = np.meshgrid(axis, axis)
  l1, l2 = _losses_np(x1, x2)
  total = l1 + l2
  n = len(results)
  cols = min(n, 6)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.75 * rows + 0.5), squeeze=False)
  colors = plt.cm.tab10(np.arange(len(STARTS)))
  order = np.argsort(front[2])[:: max(1, len(front[2]) // 400)]
  front_x = (front[2][order], front[3][order])
  for ax, res in zip(axes.flat, results):
    ax.contourf(x1, x2, total, levels=30, cmap="Greys_r", alpha=0.55)
    ax.contour(x1, x2, total, levels=15, colors="k", linewidths=0.25, alpha=0.5)
    ax.plot(front_x[0], front_x[1], "-", color="cyan", lw=2.0, alpha=0.8, zorder=2)
    for i, p in enumerate(res["path"]):
      ax.plot(p[:, 0], p[:, 1], "-", color=colors[i], lw=1.3, zorder=3)
      ax.plot(p[0, 0], p[0, 1], "o", color=colors[i], ms=3.5, zorder=4)
      end = "*" if res["opt"][i] else ("s" if res["on_front"][i] else "x")
      ax.plot(
        p[-1, 0],
        p[-1, 1],
        end,
        color=colors[i],
        mec="k",
        mew=0.5,
        ms=7 if end == "*" else 5,
        zorder=5,
      )
    ax.plot(0.0, -8.355, "+", color="red", ms=9, mew=1.5, zorder=6)
    ax.set_xlim(-LIMIT, LIMIT)
    ax.set_ylim(-LIMIT, LIMIT)
    ax.set_xticks([-10, 0, 10])
    ax.set_yticks([-10, 0, 10])
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal")
    ax.set_title(
      f"{res['label']}  ({int(np.sum(res['opt']))}/5 opt, {int(np.sum(res['on_front']))}/5 front)",
      fontsize=8,
    )
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  fig.suptitle(
    title + "\ncontours: L1+L2; cyan: Pareto set; red +: joint optimum; "
    "o start, * joint optimum, ■ on the front, x neither",
    fontsize=9,
  )
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=85)
  plt.close(fig)


COLUMNS = (
  [("method", "method"), ("dtype", "dtype")]
  + [(f"s{i}", f"({s[0]:g}, {s[1]:g})") for i, s in enumerate(STARTS)]
  + [("n_optimum", "opt"), ("n_front", "front"), ("wall_s", "s", ".1f")]
)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick",
    action="store_true",
    help="4 methods, 5,000 steps (< 2 min; a smoke test, not the paper's setting)",
  )
  parser.add_argument(
    "--json", metavar="PATH", help="write every figure and the configuration here"
  )
  parser.add_argument(
    "--png", metavar="PATH", help="write the trajectory figure (float64 runs) here"
  )
  args = parser.parse_args(argv)
  cfg = dict(
    QUICK if args.quick else FULL,
    quick=args.quick,
    optimum_loss=OPTIMUM_LOSS,
    optimum_tol=OPTIMUM_TOL,
    front_tol=FRONT_TOL,
    front_grid=FRONT_GRID,
    starts=STARTS,
    toy_hyper=TOY_HYPER,
  )
  runs = configs(args.quick)
  cfg["methods"] = [r["label"] for r in runs]
  start = time.perf_counter()
  front = pareto_front()
  results = []
  for dtype in cfg["dtypes"]:
    for run in runs:
      res = run_config(run, dtype, cfg["num_steps"], cfg["record_every"], cfg["lr"])
      results.append(
        dict(res, label=run["label"], method=run["method"], hyper=run["hyper"], dtype=dtype)
      )
      print(f"  {run['label']:>14} {dtype}: {res['wall_s']:.1f}s", file=sys.stderr, flush=True)
  rows = make_rows(results, front)
  for res, row in zip(results, rows):
    res["opt"], res["on_front"] = row["reached_optimum"], row["on_front"]
  summary = summarize(rows)
  wall = time.perf_counter() - start
  info = common.machine_info(packages=("jax", "jaxlib", "numpy", "optax"))
  setting = f"{cfg['num_steps']:,} steps, Adam-based methods at lr {cfg['lr']:g}" + (
    "  [--quick: NOT the paper's setting of 35,000 steps]" if args.quick else ""
  )
  print(f"\nPUB paper toy (Fig. 2): final (L1, L2) per start; {setting}")
  print(
    f"O: both losses within {OPTIMUM_TOL} of {OPTIMUM_LOSS} (joint optimum); P: on the Pareto front "
    f"(no point improves both losses by > {FRONT_TOL}); -: neither. '@10': weights refreshed every 10 steps."
  )
  common.print_table(rows, COLUMNS)
  for dtype, claims in summary.items():
    print(f"{dtype}: " + "; ".join(f"{k}={v}" for k, v in claims.items()))
  print(f"wall time {wall:.1f}s")
  if args.png:
    f64 = [r for r in results if r["dtype"] == cfg["dtypes"][0]]
    plot(f64, front, args.png, f"PUB paper toy, {cfg['dtypes'][0]}, {setting}")
    print(f"wrote {args.png}")
  if args.json:
    common.write_json(
      args.json,
      dict(benchmark="toy", config=cfg, machine=info, rows=rows, summary=summary, wall_s=wall),
    )
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
