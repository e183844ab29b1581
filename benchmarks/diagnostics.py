"""What PUB's balancing sees: task weights, look-ahead cosines and the committed history's share.

PUB balances the look-aheads ``d_k = inner(g_k, s)``. With one shared Adam state, every
``d_k`` reuses the committed history (``β1·m``, ``β2·v``), so the look-aheads may be mostly the
same vector and the Nash weights near equal. This script measures, with
``BalanceState.diagnostics`` (``diagnostics=True``):

* ``history_share``: ``‖h‖² / ‖d_k‖²`` over the shared parameters, with ``h = inner(0, s)``
  the zero-gradient look-ahead (the committed state's own step);
* ``cos``: the cosine between the balanced vectors of the two tasks (the look-aheads, or
  their fresh parts ``d_k − h`` for ``lookahead="fresh"``);
* the normalised weights ``α / Σα`` (their spread: how far from equal weighting they move),

on the paper's 2-parameter toy (five starts, 35,000 Adam steps at lr 1e-3, float32 and
float64; also where each run ends) and while training MMoE (small preset) on generated
AliExpress-schema data (conflict 0.8), for PUB's variants.

Examples::

  python benchmarks/diagnostics.py --quick
  python benchmarks/diagnostics.py --json benchmarks/results/diagnostics.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import machine_info, print_table, write_json  # noqa: E402

import pub_optax  # noqa: E402
from pub_optax.toy import OPTIMUM_LOSS, STARTS, toy_losses  # noqa: E402

METHODS = ("pub", "pub_fresh", "pub_rms", "pub_rms_convex_state", "pub_raw", "pub_adatask")


def _method(name: str, lr, num_tasks: int, shared=None):
  """The registered method, with the history share recorded."""
  info = pub_optax.METHODS[name]
  if info.level != "update":
    return pub_optax.make_method(name, lr, num_tasks=num_tasks, shared=shared)
  options = {
    "pub": {},
    "pub_fresh": {"lookahead": "fresh"},
    "pub_rms": {"scaling": "rms"},
    "pub_rms_convex_state": {"scaling": "rms", "commit": "convex"},
    "pub_raw": {"scaling": "raw"},
    "pub_adatask": {"per_task_state": True},
  }[name]
  return pub_optax.pub_adam(lr, num_tasks=num_tasks, shared=shared, diagnostics=True, **options)


def _summary(values: np.ndarray) -> dict:
  return {
    "median": float(np.median(values)),
    "q10": float(np.quantile(values, 0.1)),
    "q90": float(np.quantile(values, 0.9)),
  }


def _record(state) -> dict:
  d = pub_optax.balance_state(state).diagnostics
  raw = d.raw_weights.astype(jnp.float32)
  return {
    "cos": d.cosines[0, 1],
    "share": jnp.mean(d.history_share),
    "weight0": raw[0] / jnp.sum(raw),
  }


def toy_run(name: str, dtype, steps: int, every: int) -> dict:
  """Five starts vmapped, diagnostics sampled every ``every`` steps."""
  tx = _method(name, 1e-3, 2)
  x0 = jnp.asarray(STARTS, dtype)

  def one(x):
    state = tx.init(x)

    def step(carry, _):
      x, state = carry
      _, g = pub_optax.value_and_task_grads(toy_losses)(x)
      u, state = tx.update(g, state, x)
      return (x + u, state), _record(state)

    def block(carry, _):
      carry, recs = jax.lax.scan(step, carry, None, length=every)
      return carry, jax.tree.map(lambda r: r[-1], recs)

    (x, _), recs = jax.lax.scan(block, (x, state), None, length=steps // every)
    return x, recs

  x, recs = jax.jit(jax.vmap(one))(x0)
  losses = np.asarray(jax.vmap(toy_losses)(x), np.float64)
  dist = np.abs(losses - OPTIMUM_LOSS).max(axis=1)
  tail = jax.tree.map(lambda r: np.asarray(r[:, r.shape[1] // 2 :], np.float64), recs)
  weight0 = tail["weight0"]
  return {
    "method": name,
    "dtype": jnp.dtype(dtype).name,
    "end_dist": dist.round(4).tolist(),
    "within_0.1": int(np.sum(dist < 0.1)),
    "cos": _summary(tail["cos"]),
    "history_share": _summary(tail["share"]),
    "weight_spread": float(np.quantile(np.abs(weight0 - 0.5), 0.9) * 2),
  }


def ranking_run(name: str, splits, args) -> dict:
  from flax import nnx

  from pub_optax.ranking.cli import model_kwargs
  from pub_optax.ranking.models import apply, build_model, split
  from pub_optax.ranking.train import task_losses, train_batches

  data = splits["train"]
  k = data.labels.shape[1]
  model = build_model(
    "mmoe",
    data.cardinalities,
    data.numerical.shape[1],
    k,
    rngs=nnx.Rngs(params=args.seed, dropout=args.seed + 1),
    **model_kwargs("mmoe", "small", 0.2),
  )
  model.train()
  graph, params, rest = split(model)
  mask = model.shared_mask()
  tx = _method(name, args.lr, k, shared=mask)

  def losses_fn(p, r, batch):
    logits, new_rest = apply(graph, p, r, batch["categorical"], batch["numerical"])
    return task_losses(logits, batch["labels"]), new_rest

  step = jax.jit(pub_optax.make_train_step(tx, mask, losses_fn))
  opt_state = tx.init(params)
  records, n, t0 = [], 0, time.time()
  for epoch in range(args.epochs):
    for batch in train_batches(data, args.batch_size, args.seed, epoch):
      out = step(params, rest, opt_state, batch)
      params, rest, opt_state = out.params, out.rest, out.opt_state
      if n % args.every == 0:
        records.append(jax.tree.map(float, _record(opt_state)) | {"step": n})
      n += 1
  later = [r for r in records if r["step"] >= args.skip]
  column = lambda key: np.array([r[key] for r in later])
  return {
    "method": name,
    "steps": n,
    "seconds": time.time() - t0,
    "cos": _summary(column("cos")),
    "history_share": _summary(column("share")),
    "weight_spread": float(np.quantile(np.abs(column("weight0") - 0.5), 0.9) * 2),
    "weight0_range": [float(column("weight0").min()), float(column("weight0").max())],
    "records": records,
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="smoke test: short runs, two methods")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--toy-steps", type=int, default=35_000)
  p.add_argument("--rows", type=int, default=40_000)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=512)
  p.add_argument("--lr", type=float, default=3e-2)
  p.add_argument("--every", type=int, default=2, help="ranking: record every N steps")
  p.add_argument("--skip", type=int, default=20, help="ranking: summarise steps from this one on")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  methods = args.methods.split(",")
  if args.quick:
    args.toy_steps, args.rows, args.epochs, args.skip = 500, 2_000, 1, 0
    methods = methods[:2] if args.methods == ",".join(METHODS) else methods
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    p.error(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
  jax.config.update("jax_enable_x64", True)
  # --quick checks that the script runs: compilation dominates it, and XLA's optimisation
  # passes do not change what is recorded.
  jax.config.update("jax_disable_most_optimizations", args.quick)

  toy = [toy_run(m, d, args.toy_steps, 100) for m in methods for d in (jnp.float32, jnp.float64)]
  print(f"Toy ({args.toy_steps} steps, five paper starts; diagnostics over the second half):")
  q3 = lambda s: f"{s['q10']:.3f} / {s['median']:.3f} / {s['q90']:.3f}"
  print_table(
    [
      {
        **{k: r[k] for k in ("method", "dtype", "within_0.1")},
        "end": " ".join(f"{d:.3f}" for d in r["end_dist"]),
        "cos": q3(r["cos"]),
        "share": q3(r["history_share"]),
        "spread": f"{r['weight_spread']:.3f}",
      }
      for r in toy
    ],
    ["method", "dtype", ("within_0.1", "starts within 0.1"), ("end", "end distance per start"),
     ("cos", "cos q10/med/q90"), ("share", "history share q10/med/q90"),
     ("spread", "weight spread q90")],
  )  # fmt: skip

  from pub_optax.ranking.data import generate_splits

  # --quick: 4 categorical fields instead of the schema's 16 (smaller programs to compile).
  fields = {"n_categorical": 4} if args.quick else {}
  splits = generate_splits(args.rows, 0, 0, seed=0, conflict=0.8, conversion_rate=0.2, **fields)
  jax.config.update("jax_enable_x64", False)
  ranking = [ranking_run(m, splits, args) for m in methods]
  print(f"\nMMoE (small), {args.rows} rows, {args.epochs} epochs, lr {args.lr}, steps >= {args.skip}:")  # fmt: skip
  print_table(
    [
      {
        "method": r["method"],
        "steps": r["steps"],
        "cos": q3(r["cos"]),
        "share": q3(r["history_share"]),
        "range": "{:.3f}-{:.3f}".format(*r["weight0_range"]),
      }
      for r in ranking
    ],
    ["method", "steps", ("cos", "cos q10/med/q90"), ("share", "history share q10/med/q90"),
     ("range", "α0/Σα range")],
  )  # fmt: skip
  if args.json:
    write_json(
      args.json,
      {
        "command": "python benchmarks/diagnostics.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(("jax", "jaxlib", "optax", "flax", "numpy")),
        "toy": toy,
        "ranking": ranking,
      },
    )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
