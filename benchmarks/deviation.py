"""Gradient versus update: how far does the update Adam applies drift from the balanced gradient?

PUB's premise (Yuan, Cai & Dong, arXiv 2410.05806): gradient-balancing methods choose a joint
*gradient*, but with Adam the *update* that follows can point elsewhere, so the balance they
compute is not the balance that is applied. This script measures that while training MMoE
(small preset) on generated AliExpress-schema ranking data.

At every ``--every``-th step, on the shared parameters only, with ``g_k`` the task gradients,
``w`` the weights the method applied (``BalanceState.weights``), ``j = Σ_k w_k g_k`` the balanced
joint gradient and ``u`` the update actually applied:

* ``cos(−j, u)``: the cosine between the intended descent direction and the applied update;
* per task, sign agreement between the first-order loss change under the intended direction,
  ``g_kᵀ(−j)``, and under the applied update, ``g_kᵀu`` (same sign = the method's intended
  improvement / sacrifice of task k is what actually happens to first order);
* per task, the rate of first-order descent under the applied update (``g_kᵀu < 0``).

Gradient-level methods (equal, MGDA, Nash-MTL): the intended direction is ``−j``. For PUB the
balanced update is itself applied (the intended direction *is* ``u``: its cosine is 1 by
construction, reported as a check), and ``cos(−j, u)`` with ``j = Σ_k α̂_k g_k`` is reported for
comparison, with the same per-task sign statistics.

Examples::

  python benchmarks/deviation.py --quick
  python benchmarks/deviation.py --json benchmarks/results/deviation.json --png benchmarks/results/deviation.png
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
import optax  # noqa: E402
from common import machine_info, print_table, write_json  # noqa: E402

DEFAULT_METHODS = ("equal", "mgda", "nash_mtl", "pub_rms", "pub_convex")


def _flat_shared(tree, mask, lead: bool) -> jax.Array:
  """Concatenates the shared leaves: ``(K, P)`` with a leading task axis, else ``(P,)``."""
  leaves = [x for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if m]
  if lead:
    return jnp.concatenate([x.reshape(x.shape[0], -1).astype(jnp.float32) for x in leaves], axis=1)
  return jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in leaves])


def make_step(tx, mask, losses_fn):
  """A jitted train step that also returns the deviation diagnostics of the step."""
  from pub_optax import balance_state, value_and_task_grads

  def step(params, rest, opt_state, batch):
    (losses, new_rest), grads = value_and_task_grads(
      lambda p, r: losses_fn(p, r, batch), has_aux=True
    )(params, rest)
    updates, opt_state = tx.update(grads, opt_state, params, task_losses=losses)
    weights = balance_state(opt_state).weights
    g = _flat_shared(grads, mask, lead=True)  # (K, P)
    u = _flat_shared(updates, mask, lead=False)  # (P,)
    j = weights.astype(jnp.float32) @ g  # balanced joint gradient
    eps = 1e-30
    cos = jnp.dot(-j, u) / (jnp.linalg.norm(j) * jnp.linalg.norm(u) + eps)
    intended = g @ (-j)  # g_kᵀ(−j): first-order change, intended
    applied = g @ u  # g_kᵀu: first-order change, applied
    diag = {
      "cos": cos,
      "intended": intended,
      "applied": applied,
      "weights": weights,
      "losses": losses,
      "update_rms": jnp.sqrt(jnp.mean(u * u)),
    }
    return optax.apply_updates(params, updates), new_rest, opt_state, diag

  return jax.jit(step)


def run_method(method, splits, args) -> dict:
  from flax import nnx

  from pub_optax._methods import make_method
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
    **model_kwargs("mmoe", "small", args.dropout),
  )
  model.train()
  graph, params, rest = split(model)
  mask = model.shared_mask()
  tx = make_method(method, args.lr, num_tasks=k, shared=mask)

  def losses_fn(p, r, batch):
    logits, new_rest = apply(graph, p, r, batch["categorical"], batch["numerical"])
    return task_losses(logits, batch["labels"]), new_rest

  step = make_step(tx, mask, losses_fn)
  opt_state = tx.init(params)
  records = []
  n = 0
  t0 = time.time()
  for epoch in range(args.epochs):
    for batch in train_batches(data, args.batch_size, args.seed, epoch):
      params, rest, opt_state, diag = step(params, rest, opt_state, batch)
      if n % args.every == 0:
        records.append({key: np.asarray(v).tolist() for key, v in diag.items()} | {"step": n})
      n += 1
  seconds = time.time() - t0
  cos = np.array([r["cos"] for r in records])
  intended = np.array([r["intended"] for r in records])
  applied = np.array([r["applied"] for r in records])
  agree = np.sign(intended) == np.sign(applied)
  return {
    "method": method,
    "level": "update" if method.startswith("pub") else "gradient",
    "steps": n,
    "sampled": len(records),
    "seconds": seconds,
    "cos_median": float(np.median(cos)),
    "cos_q10": float(np.quantile(cos, 0.1)),
    "cos_q90": float(np.quantile(cos, 0.9)),
    "cos_mean": float(np.mean(cos)),
    "sign_agreement": agree.mean(axis=0).tolist(),
    "sign_agreement_all": float(agree.mean()),
    "descent_rate_intended": (intended < 0).mean(axis=0).tolist(),
    "descent_rate_applied": (applied < 0).mean(axis=0).tolist(),
    "mean_weights": np.mean([r["weights"] for r in records], axis=0).tolist(),
    "records": records,
  }


def plot(results, task_names, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  bins = np.linspace(-1, 1, 41)
  for i, r in enumerate(results):
    cos = [x["cos"] for x in r["records"]]
    label = f"{r['method']} (median {r['cos_median']:.2f})"
    axes[0].hist(cos, bins=bins, alpha=0.5, color=f"C{i}", label=label)
    axes[1].plot([x["step"] for x in r["records"]], cos, color=f"C{i}", label=r["method"])
  axes[0].set(
    title="cos(−Σ w_k g_k, applied update), shared params", xlabel="cosine", ylabel="sampled steps"
  )
  axes[1].set(title="the same over training", xlabel="step", ylabel="cosine", ylim=(-1.05, 1.05))
  width = 0.8 / max(len(results), 1)
  x = np.arange(len(task_names))
  for i, r in enumerate(results):
    axes[2].bar(x + i * width, r["sign_agreement"], width, color=f"C{i}", label=r["method"])
  axes[2].set_xticks(x + width * (len(results) - 1) / 2, task_names)
  axes[2].set(
    title="sign agreement: g_kᵀ(−Σwg) vs g_kᵀΔθ", ylabel="fraction of sampled steps", ylim=(0, 1.05)
  )
  for ax in axes:
    ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="smoke test: small data, 2 methods (< 2 min)")
  p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
  p.add_argument("--rows", type=int, default=40_000)
  p.add_argument("--conflict", type=float, default=0.8)
  p.add_argument("--conversion-rate", type=float, default=0.2)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=512)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--dropout", type=float, default=0.2)
  p.add_argument("--every", type=int, default=2, help="record every N steps")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None)
  p.add_argument("--png", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.rows, args.epochs = 4_000, 1
    if args.methods == ",".join(DEFAULT_METHODS):
      args.methods = "nash_mtl,pub_rms"
  from pub_optax.ranking.data import generate_splits

  # The same programs recompile on every run otherwise; the cache only saves time.
  jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("PUB_OPTAX_JAX_CACHE", os.path.expanduser("~/.cache/pub_optax_jax")),
  )
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  t0 = time.time()
  splits = generate_splits(
    args.rows, 0, 0, seed=0, conflict=args.conflict, conversion_rate=args.conversion_rate
  )
  task_names = list(splits["train"].task_names)
  results = []
  for method in [m for m in args.methods.split(",") if m]:
    r = run_method(method, splits, args)
    results.append(r)
    print(f"{method}: {r['steps']} steps in {r['seconds']:.1f} s", flush=True)
  rows = [
    {
      "method": r["method"],
      "level": r["level"],
      "cos median": r["cos_median"],
      "cos q10": r["cos_q10"],
      "cos q90": r["cos_q90"],
      **{f"sign agree {t}": a for t, a in zip(task_names, r["sign_agreement"])},
      **{f"descent {t}": a for t, a in zip(task_names, r["descent_rate_applied"])},
    }
    for r in results
  ]
  print_table(rows, [(c, c, ".3f") if c not in ("method", "level") else c for c in rows[0]])
  report = {
    "command": " ".join(
      ["python", "benchmarks/deviation.py"] + (sys.argv[1:] if argv is None else list(argv))
    ),
    "arguments": vars(args),
    "machine": machine_info(("jax", "optax", "flax")),
    "task_names": task_names,
    "seconds": time.time() - t0,
    "results": results,
  }
  if args.json:
    write_json(args.json, report)
  if args.png:
    plot(results, task_names, args.png)
  print(
    f"total {time.time() - t0:.0f} s"
    + (f"; wrote {args.json}" if args.json else "")
    + (f", {args.png}" if args.png else "")
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
