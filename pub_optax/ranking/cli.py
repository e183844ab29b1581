"""``pub-optax train``: PUB against baselines on a multi-task ranking model, with a results table.

Examples::

  pub-optax train                                   # generated data, PUB vs equal weighting
  pub-optax train --methods pub,nash_mtl,equal --seeds 3 --epochs 5
  pub-optax train --data aliexpress:/data/AliExpress_NL --preset paper --epochs 50
  pub-optax methods                                 # the methods and their references
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from pub_optax._methods import METHODS, method_names
from pub_optax.ranking.data import (
  generate_splits,
  load_aliccp,
  load_aliexpress,
  load_aliexpress_raw,
)
from pub_optax.ranking.data.types import RankingData
from pub_optax.ranking.experiment import RunConfig, atomic_write_bytes, atomic_write_json, run
from pub_optax.ranking.models import MODEL_NAMES

PRESETS = ("small", "paper")


def model_kwargs(model: str, preset: str, dropout: float) -> dict:
  """Model sizes: ``paper`` (the PUB paper's settings, the models' defaults) or ``small`` (CPU-friendly)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
  kwargs = {"dropout": dropout}
  if preset == "paper":
    return kwargs
  hidden = "expert_dims" if model in ("mmoe", "ple") else "bottom_dims"
  kwargs.update(embed_dim=16, tower_dims=(32,), **{hidden: (64, 32)})
  if model == "mmoe":
    kwargs["n_experts"] = 4
  if model == "ple":
    kwargs.update(n_shared_experts=2, n_task_experts=2)
  return kwargs


def split_validation(
  train: RankingData, fraction: float, seed: int
) -> tuple[RankingData, RankingData]:
  """A seeded random ``fraction`` of ``train`` held out for early stopping."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"--val-fraction must be in (0, 1), got {fraction}")
  order = np.random.default_rng(seed).permutation(len(train))
  n_val = max(int(round(fraction * len(train))), 1)
  return train.take(np.sort(order[n_val:])), train.take(np.sort(order[:n_val]))


def load_data(spec: str, args) -> dict[str, RankingData]:
  """``generated`` | ``aliexpress:DIR`` | ``aliexpress-raw:DIR:CC`` | ``aliccp:DIR`` -> train/val/test."""
  kind, _, rest = spec.partition(":")
  if kind == "generated":
    splits = generate_splits(
      args.rows,
      args.rows // 4,
      args.rows // 4,
      seed=args.data_seed,
      conflict=args.conflict,
      conversion_rate=args.conversion_rate,
    )
    return dict(zip(("train", "val", "test"), splits)) if not isinstance(splits, dict) else splits
  if not rest:
    raise ValueError(f"--data {spec!r}: give a path, e.g. {kind}:/path/to/files")
  if kind == "aliexpress":
    loaded = load_aliexpress(rest)
  elif kind == "aliexpress-raw":
    directory, _, country = rest.rpartition(":")
    if not directory or not country:
      raise ValueError(
        f"--data {spec!r}: use aliexpress-raw:DIR:COUNTRY, e.g. aliexpress-raw:/data:NL"
      )
    loaded = load_aliexpress_raw(directory, country)
  elif kind == "aliccp":
    loaded = load_aliccp(rest)
  else:
    raise ValueError(
      f"unknown --data kind {kind!r}; valid: generated, aliexpress:DIR, aliexpress-raw:DIR:CC, aliccp:DIR"
    )
  train, val = split_validation(loaded["train"], args.val_fraction, args.data_seed)
  return {"train": train, "val": val, "test": loaded["test"]}


def parse_rates(text: str, methods: Sequence[str]) -> dict[str, float]:
  """``1e-3`` for every method, or ``pub=1e-3,equal=2e-3`` (unnamed methods take ``default=``)."""
  if "=" not in text:
    return {m: float(text) for m in methods}
  pairs = dict(item.split("=", 1) for item in text.split(","))
  unknown = sorted(set(pairs) - set(methods) - {"default"})
  if unknown:
    raise ValueError(f"--lr names methods that are not run: {unknown}")
  default = pairs.get("default")
  missing = [m for m in methods if m not in pairs and default is None]
  if missing:
    raise ValueError(f"--lr gives no learning rate for {missing}; add default=VALUE")
  return {m: float(pairs.get(m, default)) for m in methods}


def summarise(results: list[dict], task_names: Sequence[str]) -> list[dict]:
  """Mean and std over seeds of every test metric, one row per method."""
  rows = []
  for method in dict.fromkeys(r["config"]["method"] for r in results):
    runs = [r for r in results if r["config"]["method"] == method]
    row = {
      "method": method,
      "seeds": len(runs),
      "learning_rate": runs[0]["config"]["learning_rate"],
    }
    keys = [f"{t}_auc" for t in task_names] + ["mean_auc"] + [f"{t}_logloss" for t in task_names]
    for key in keys:
      values = np.array([r["test"][key] for r in runs], dtype=float)
      row[key] = float(np.mean(values))
      row[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    row["best_epoch"] = float(np.mean([r["best_epoch"] for r in runs]))
    rms = [e["shared_update_rms"] for r in runs for e in r["log"]]
    row["shared_update_rms"] = float(np.median(rms)) if rms else float("nan")
    rows.append(row)
  return rows


def format_table(rows: list[dict], task_names: Sequence[str]) -> str:
  """The results table: test AUC and logloss per task, mean AUC, as mean ± std over seeds."""
  cols = [f"{t}_auc" for t in task_names] + ["mean_auc"] + [f"{t}_logloss" for t in task_names]
  header = ["method", "lr"] + [c.replace("_", " ") for c in cols] + ["upd rms", "seeds"]
  lines = [header]
  for r in rows:
    cells = [r["method"], f"{r['learning_rate']:.0e}"]
    cells += [f"{r[c]:.4f}±{r[c + '_std']:.4f}" for c in cols]
    cells += [f"{r['shared_update_rms']:.1e}", str(r["seeds"])]
    lines.append(cells)
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
  out.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(out)


def plot(results: list[dict], path: str) -> str | None:
  """Validation mean AUC per epoch, task weights and shared-update RMS over training, as a PNG."""
  try:
    import matplotlib
  except ImportError:
    return "matplotlib is not installed (pip install 'pub_optax[plot]'): PNG skipped"
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  methods = list(dict.fromkeys(r["config"]["method"] for r in results))
  colors = {m: f"C{i}" for i, m in enumerate(methods)}
  for r in results:
    m = r["config"]["method"]
    first = r["config"]["seed"] == min(
      x["config"]["seed"] for x in results if x["config"]["method"] == m
    )
    epochs = [v["epoch"] for v in r["val_history"]]
    axes[0].plot(
      epochs,
      [v["mean_auc"] for v in r["val_history"]],
      "o-",
      color=colors[m],
      alpha=1.0 if first else 0.35,
      label=m if first else None,
    )
    if first:
      steps = [e["step"] for e in r["log"]]
      weights = np.array([e["weights"] for e in r["log"]], dtype=float)
      if weights.size and np.all(np.isfinite(weights)):
        for k in range(weights.shape[1]):
          axes[1].plot(
            steps,
            weights[:, k],
            color=colors[m],
            ls=["-", "--", ":", "-."][k % 4],
            label=f"{m} task {k}",
          )
      axes[2].semilogy(steps, [e["shared_update_rms"] for e in r["log"]], color=colors[m], label=m)
  axes[0].set(title="validation mean AUC", xlabel="epoch")
  axes[1].set(title="task weights α̂ (first seed)", xlabel="step")
  axes[2].set(title="RMS of the applied shared update", xlabel="step")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return None


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="pub-optax",
    description=__doc__.split("\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser(
    "train", help="train a ranking model with one or more methods and compare them"
  )
  t.add_argument(
    "--data",
    default="generated",
    help="generated (default) | aliexpress:DIR | aliexpress-raw:DIR:CC | aliccp:DIR",
  )
  t.add_argument(
    "--rows",
    type=int,
    default=40_000,
    help="generated training rows (val and test: a quarter each)",
  )
  t.add_argument(
    "--conflict",
    type=float,
    default=0.5,
    help="generated data: 0 aligned tasks, 0.5 orthogonal, 1 opposed",
  )
  t.add_argument(
    "--conversion-rate",
    type=float,
    default=0.2,
    help="generated data: conversions per click (real AliExpress: about 0.02; the default keeps "
    "enough CTCVR positives for a short run)",
  )
  t.add_argument("--data-seed", type=int, default=0)
  t.add_argument(
    "--val-fraction",
    type=float,
    default=0.1,
    help="real data: share of train held out for early stopping",
  )
  t.add_argument("--model", default="mmoe", choices=MODEL_NAMES)
  t.add_argument(
    "--preset", default="small", choices=PRESETS, help="model size: small (CPU) or paper settings"
  )
  t.add_argument("--dropout", type=float, default=0.2)
  t.add_argument(
    "--methods", default="pub,equal", help=f"comma-separated; valid: {', '.join(method_names())}"
  )
  t.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
  t.add_argument("--epochs", type=int, default=3)
  t.add_argument("--patience", type=int, default=3, help="early stopping on validation mean AUC")
  t.add_argument("--batch-size", type=int, default=512)
  # 3e-2: the rate most often chosen on validation for equal weighting and PUB (convex) in the
  # short-budget study of benchmarks/ranking.py (benchmarks/results/ranking_cpu.md).
  t.add_argument(
    "--lr",
    default="3e-2",
    help="one rate, or per method: pub=1e-3,equal=2e-3,default=1e-3 (the default 3e-2 suits short runs "
    "on generated data; the paper used 1e-3 for up to 50 epochs)",
  )
  t.add_argument("--weight-decay", type=float, default=0.0)
  t.add_argument(
    "--sparse-embeddings",
    action="store_true",
    help="per-task gradients of the embedding tables at the batch's rows only (same results, "
    "less memory and time; not for the AdaTask and Clippy methods)",
  )
  t.add_argument(
    "--out", default="runs/latest", help="folder for results.json, curves.png and checkpoints"
  )
  t.add_argument(
    "--resume", action="store_true", help="continue an interrupted run from its checkpoints"
  )
  t.add_argument("--no-progress", action="store_true")
  sub.add_parser("methods", help="list the methods")
  return parser


def train_command(args) -> int:
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(method_names())}")
  dense_only = [m for m in methods if not METHODS[m].row_sparse]
  if args.sparse_embeddings and dense_only:
    raise ValueError(
      f"--sparse-embeddings: method(s) {dense_only} need dense table gradients (AdaTask keeps K "
      "states, Clippy clips per tensor); run them without the flag"
    )
  rates = parse_rates(args.lr, methods)
  if os.path.exists(os.path.join(args.out, "results.json")) and not args.resume:
    print(
      f"note: {args.out} holds an earlier run; it is overwritten (use --resume to continue it)",
      file=sys.stderr,
    )
  t0 = time.time()
  splits = load_data(args.data, args)
  task_names = splits["train"].task_names
  print(
    f"data {args.data}: train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])} rows; "
    f"tasks {', '.join(task_names)}; positives in train "
    + ", ".join(f"{t} {splits['train'].labels[:, k].mean():.2%}" for k, t in enumerate(task_names))
  )
  print(f"model {args.model} ({args.preset}), devices {jax.devices()}")
  results = []
  for method in methods:
    for seed in range(args.seeds):
      config = RunConfig(
        model=args.model,
        method=method,
        seed=seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=rates[method],
        weight_decay=args.weight_decay,
        patience=args.patience,
        model_kwargs=model_kwargs(args.model, args.preset, args.dropout),
        sparse_embeddings=args.sparse_embeddings,
      )
      checkpoint = os.path.join(args.out, "checkpoints", f"{method}_seed{seed}.ckpt")
      if not args.resume and os.path.exists(checkpoint):
        os.remove(checkpoint)
      results.append(run(config, splits, checkpoint=checkpoint, progress=not args.no_progress))
  rows = summarise(results, task_names)
  table = format_table(rows, task_names)
  print(
    f"\ntest metrics of the best validation epoch, mean ± std over {args.seeds} seed(s):\n{table}"
  )
  report = {
    "command": " ".join(["pub-optax"] + sys.argv[1:]),
    "arguments": vars(args),
    "machine": {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
    },
    "seconds": time.time() - t0,
    "summary": rows,
    "runs": results,
  }
  atomic_write_json(os.path.join(args.out, "results.json"), report)
  atomic_write_bytes(os.path.join(args.out, "table.txt"), (table + "\n").encode())
  message = plot(results, os.path.join(args.out, "curves.png"))
  print(
    f"\nwrote {args.out}/results.json, {args.out}/table.txt"
    + (f"; {message}" if message else f", {args.out}/curves.png")
  )
  print(f"total {time.time() - t0:.0f} s")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.command == "methods":
    for name, info in METHODS.items():
      print(f"{name:14s} {info.description}")
    return 0
  try:
    return train_command(args)
  except (ValueError, FileNotFoundError) as err:
    print(f"pub-optax: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
