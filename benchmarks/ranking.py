"""Table II of the PUB paper, on this package's data, with a fair protocol.

For each (data setting, model, method): tune the learning rate on the validation split over a
fixed grid with seed 0, then compare on the test split with the tuned rate over S seeds (seed 0
is the tuning run itself). Reported per method: test AUC per task and their average (mean ± std
over seeds), the median RMS of the applied shared update, and a paired comparison with the
backbone's equal weighting (paired t-test over seeds, ``scipy.stats.ttest_rel``, and a two-sided
sign test). Two controls: ``equal_Kx`` (equal weighting at K× the tuned equal rate: does a larger
step explain a gain?) and ``pub_fixed`` (PUB with the weights stuck at 1, as the public code runs).

Settings: generated AliExpress-schema data at several conflict levels (``--data generated``),
or real AliExpress CSVs (``--data aliexpress:DIR``, read by ``pub_optax.ranking.cli.load_data``),
plus Multi-Fashion (real Fashion-MNIST, accuracy instead of AUC, MultiLeNet).

Every finished run is appended to a JSON-lines file (``--runs``); a rerun skips the runs it
finds there, so an interrupted study continues where it stopped.

Examples::

  python benchmarks/ranking.py --quick
  python benchmarks/ranking.py --models mmoe --seeds 3 --epochs 2 --rows 40000 \\
      --json benchmarks/results/ranking_cpu.json
  python benchmarks/ranking.py --data aliexpress:/data/AliExpress_NL --models mmoe,ple --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
from common import append_run, enable_compile_cache, load_runs, machine_info, write_json  # noqa: E402

RANKING_METHODS = (
  "equal",
  "mgda",
  "nash_mtl",
  "imtl_g",
  "pcgrad",
  "cagrad",
  "uncertainty",
  "famo",
  "adatask",
  "clippy_adam",
  "pub_rms",
  "pub_raw",
  "pub_convex",
  "pub_fixed",
)
FASHION_METHODS = (
  "equal",
  "mgda",
  "nash_mtl",
  "imtl_g",
  "famo",
  "pub_rms",
  "pub_raw",
  "pub_convex",
  "pub_fixed",
)
CONTROL = "equal_Kx"  # equal weighting at K x the tuned equal learning rate


# ----------------------------------------------------------------------------- run store


def run_key(setting: str, model: str, label: str, lr: float, seed: int) -> str:
  return f"{setting}|{model}|{label}|{lr:.3g}|{seed}"


# ----------------------------------------------------------------------------- one run


def ranking_run(splits, model, method, lr, seed, args) -> dict:
  from pub_optax.ranking.cli import model_kwargs
  from pub_optax.ranking.experiment import RunConfig, run

  config = RunConfig(
    model=model,
    method=method,
    seed=seed,
    epochs=args.epochs,
    batch_size=args.batch_size,
    learning_rate=lr,
    weight_decay=args.weight_decay,
    patience=args.patience,
    model_kwargs=model_kwargs(model, args.preset, args.dropout),
    log_every=10,
  )
  t0 = time.time()
  result = run(config, splits, progress=False)
  tasks = splits["train"].task_names
  rms = [e["shared_update_rms"] for e in result["log"]]
  weights = np.array([e["weights"] for e in result["log"]], dtype=float)
  return {
    "val": max(v["mean_auc"] for v in result["val_history"]),
    "test": {**{t: result["test"][f"{t}_auc"] for t in tasks}, "mean": result["test"]["mean_auc"]},
    "test_logloss": {t: result["test"][f"{t}_logloss"] for t in tasks},
    "best_epoch": result["best_epoch"],
    "epochs_run": result["epochs_run"],
    "shared_update_rms": float(np.median(rms)) if rms else float("nan"),
    "mean_weights": weights.mean(axis=0).tolist() if weights.size else [],
    "seconds": time.time() - t0,
  }


def fashion_run(splits, method, lr, seed, args) -> dict:
  from flax import nnx

  from pub_optax import vision
  from pub_optax._methods import make_method

  model = vision.MultiLeNet(rngs=nnx.Rngs(seed))
  tx = make_method(method, lr, num_tasks=2, shared=model.shared_mask(), inject_learning_rate=True)
  t0 = time.time()
  result = vision.fit(model, tx, splits, epochs=args.fashion_epochs, batch_size=256, seed=seed)
  names = splits["train"].task_names
  return {
    "val": result["val"]["mean_accuracy"],
    "test": {
      **{t: a for t, a in zip(names, result["test"]["accuracy"])},
      "mean": result["test"]["mean_accuracy"],
    },
    "best_epoch": result["best_epoch"] + 1,
    "epochs_run": len(result["history"]),
    "shared_update_rms": float(np.median([e["shared_update_rms"] for e in result["history"]])),
    "mean_weights": result["history"][-1]["weights"],
    "seconds": time.time() - t0,
  }


# ----------------------------------------------------------------------------- protocol


def methods_for(model: str, methods: list[str]) -> list[str]:
  """The methods that can train ``model``: the single-task baseline shares no parameter, so the
  methods that balance shared parameters are left out of its rows (with a note on stderr), and
  it runs ``equal`` (one model per task trained on its own loss) and the loss-level methods."""
  if model != "single_task":
    return methods
  from pub_optax.ranking.cli import balances_shared_parameters

  kept = [m for m in methods if not balances_shared_parameters(m)]
  dropped = [m for m in methods if m not in kept]
  if dropped:
    print(f"note: single_task shares no parameter; not run with {dropped}", file=sys.stderr)
  return kept


def study(setting, models, methods, num_tasks, run_fn, args, store, seeds) -> list[dict]:
  """Tune on seed 0 over the grid, then the remaining seeds at the tuned rate, plus the K× control."""
  records = []

  def get(model, label, method, lr, seed, phase):
    key = run_key(setting, model, label, lr, seed)
    if key not in store and args.no_run:
      return None
    if key not in store:
      print(f"[{time.strftime('%H:%M:%S')}] {key} ({phase})", flush=True)
      try:
        out = run_fn(model, method, lr, seed)
      except FloatingPointError as err:  # a diverged run scores as chance and is reported
        out = {"val": float("nan"), "test": {}, "error": str(err), "seconds": 0.0}
      record = {
        "key": key,
        "setting": setting,
        "model": model,
        "label": label,
        "method": method,
        "lr": lr,
        "seed": seed,
        "phase": phase,
        **out,
      }
      append_run(args.runs, record)
      store[key] = record
      if "error" not in out:
        print(
          f"    val {out['val']:.4f} test mean {out['test']['mean']:.4f} rms {out['shared_update_rms']:.1e} "
          f"({out['seconds']:.0f} s)",
          flush=True,
        )
    records.append(store[key])
    return store[key]

  for model in models:
    tuned = {}
    for method in methods_for(model, methods):
      done = {lr: get(model, method, method, lr, 0, "tune") for lr in args.lr_grid}
      vals = {lr: r["val"] for lr, r in done.items() if r is not None}
      if len(vals) < len(args.lr_grid):  # --no-run and the tuning is incomplete
        continue
      finite = {lr: v for lr, v in vals.items() if np.isfinite(v)}
      tuned[method] = max(finite, key=finite.get) if finite else args.lr_grid[0]
      for seed in range(1, seeds):
        get(model, method, method, tuned[method], seed, "test")
    if "equal" in tuned and args.controls:
      lr = tuned["equal"] * num_tasks
      for seed in range(seeds):
        get(model, CONTROL, "equal", lr, seed, "control")
  return records


def summarise(records: list[dict], seeds: int, metric: str) -> list[dict]:
  """One row per (setting, model, label) at its tuned rate; paired tests against equal."""
  from scipy import stats

  rows = []
  groups = {}
  for r in records:
    groups.setdefault((r["setting"], r["model"], r["label"]), []).append(r)
  for (setting, model, label), runs in groups.items():
    tune = {r["lr"]: r["val"] for r in runs if r["seed"] == 0}
    if label == CONTROL:
      lr = runs[0]["lr"]
    else:
      finite = {k: v for k, v in tune.items() if np.isfinite(v)}
      if not finite:
        continue
      lr = max(finite, key=finite.get)
    final = sorted(
      (r for r in runs if r["lr"] == lr and r["seed"] < seeds and "error" not in r),
      key=lambda r: r["seed"],
    )
    if not final:
      continue
    tasks = [t for t in final[0]["test"] if t != "mean"]
    row = {
      "setting": setting,
      "model": model,
      "method": label,
      "lr": lr,
      "seeds": len(final),
      "val_by_lr": {f"{k:.0e}": v for k, v in sorted(tune.items())} if label != CONTROL else {},
      "metric": metric,
    }
    for t in tasks + ["mean"]:
      v = np.array([r["test"][t] for r in final])
      row[t] = float(v.mean())
      row[t + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    row["per_seed_mean"] = [r["test"]["mean"] for r in final]
    row["shared_update_rms"] = float(np.median([r["shared_update_rms"] for r in final]))
    row["mean_weights"] = (
      np.mean([r["mean_weights"] for r in final], axis=0).tolist()
      if final[0]["mean_weights"]
      else []
    )
    row["seconds_per_run"] = float(np.mean([r["seconds"] for r in final]))
    rows.append(row)
  for row in rows:
    base = next(
      (
        x
        for x in rows
        if x["setting"] == row["setting"] and x["model"] == row["model"] and x["method"] == "equal"
      ),
      None,
    )
    row["diff_vs_equal"] = row["p_ttest"] = row["p_sign"] = None
    if base is None or row["method"] == "equal":
      continue
    n = min(len(base["per_seed_mean"]), len(row["per_seed_mean"]))
    a, b = np.array(row["per_seed_mean"][:n]), np.array(base["per_seed_mean"][:n])
    row["diff_vs_equal"] = float(np.mean(a - b))
    if n >= 2 and np.any(a != b):
      row["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
    wins, losses = int(np.sum(a > b)), int(np.sum(a < b))
    if wins + losses:
      row["p_sign"] = float(stats.binomtest(wins, wins + losses, 0.5).pvalue)
    row["wins_vs_equal"] = f"{wins}/{wins + losses}"
  return rows


def pooled(rows: list[dict]) -> list[dict]:
  """Each method over every (setting, model) of ``rows``: mean difference from equal weighting,
  mean rank, settings above equal, and a paired t-test over all (setting, model, seed) pairs."""
  from scipy import stats

  groups = list(dict.fromkeys((r["setting"], r["model"]) for r in rows))
  out = []
  for method in dict.fromkeys(r["method"] for r in rows):
    a, b, ranks, above = [], [], [], 0
    for group in groups:
      sub = sorted(
        (r for r in rows if (r["setting"], r["model"]) == group), key=lambda r: -r["mean"]
      )
      mine = next((r for r in sub if r["method"] == method), None)
      base = next((r for r in sub if r["method"] == "equal"), None)
      if mine is None or base is None:
        continue
      ranks.append(1 + sub.index(mine))
      n = min(len(mine["per_seed_mean"]), len(base["per_seed_mean"]))
      a += mine["per_seed_mean"][:n]
      b += base["per_seed_mean"][:n]
      above += mine["mean"] > base["mean"]
    if not ranks:
      continue
    diff = np.array(a) - np.array(b)
    out.append(
      {
        "method": method,
        "groups": len(ranks),
        "mean_rank": float(np.mean(ranks)),
        "methods_per_group": max(
          len([r for r in rows if (r["setting"], r["model"]) == g]) for g in groups
        ),
        "mean_diff_vs_equal": float(diff.mean()),
        "groups_above_equal": int(above),
        "pairs": len(diff),
        "p_ttest": float(stats.ttest_rel(a, b).pvalue)
        if np.any(diff != 0) and len(diff) > 1
        else None,
        "wins": f"{int(np.sum(diff > 0))}/{len(diff)}",
      }
    )
  return sorted(out, key=lambda r: -r["mean_diff_vs_equal"])


def pooled_markdown(table: list[dict], what: str) -> str:
  lines = [
    f"\n### Pooled over {what}\n",
    "| method | mean Δ vs equal | p (t, paired over all seeds) | wins | settings above equal | mean rank |",
    "|---|---|---|---|---|---|",
  ]
  for r in table:
    p = "—" if r["p_ttest"] is None else f"{r['p_ttest']:.3f}"
    lines.append(
      f"| {r['method']} | {r['mean_diff_vs_equal']:+.4f} | {p} | {r['wins']} | "
      f"{r['groups_above_equal']}/{r['groups']} | {r['mean_rank']:.1f} of {r['methods_per_group']} |"
    )
  return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
  lines = []
  for setting in dict.fromkeys(r["setting"] for r in rows):
    for model in dict.fromkeys(r["model"] for r in rows if r["setting"] == setting):
      sub = [r for r in rows if r["setting"] == setting and r["model"] == model]
      tasks = [
        k
        for k in sub[0]
        if k
        not in (
          "setting",
          "model",
          "method",
          "lr",
          "seeds",
          "val_by_lr",
          "metric",
          "mean",
          "per_seed_mean",
          "shared_update_rms",
          "mean_weights",
          "seconds_per_run",
          "diff_vs_equal",
          "p_ttest",
          "p_sign",
          "wins_vs_equal",
        )
        and not k.endswith("_std")
      ]
      metric = sub[0]["metric"]
      lines.append(f"\n### {setting} — {model} (test {metric}, mean ± std over seeds)\n")
      lines.append(
        "| method | tuned lr | "
        + " | ".join(tasks)
        + " | average | Δ vs equal | p (t) | p (sign) | wins | "
        "upd RMS | seeds | val by lr |"
      )
      lines.append("|" + "---|" * (len(tasks) + 10))
      for r in sorted(sub, key=lambda r: -r["mean"]):
        f = lambda x, d=4: (
          "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{d}f}"
        )
        cells = [r["method"], f"{r['lr']:.0e}"] + [
          f"{r[t]:.4f} ± {r[t + '_std']:.4f}" for t in tasks
        ]
        cells += [
          f"**{r['mean']:.4f}** ± {r['mean_std']:.4f}",
          f(r["diff_vs_equal"]),
          f(r["p_ttest"], 3),
          f(r["p_sign"], 3),
          r.get("wins_vs_equal", "—"),
          "—" if not np.isfinite(r["shared_update_rms"]) else f"{r['shared_update_rms']:.1e}",
          str(r["seeds"]),
          " ".join(f"{k}:{v:.4f}" for k, v in r["val_by_lr"].items()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--quick",
    action="store_true",
    help="smoke test: tiny data, 2 methods, 1 seed, 1 epoch, unoptimised XLA",
  )
  p.add_argument(
    "--data",
    default="generated",
    help="generated | aliexpress:DIR | aliexpress-raw:DIR:CC | aliccp:DIR",
  )
  p.add_argument("--conflicts", default="0.2,0.8", help="generated data: conflict levels")
  p.add_argument("--conversion-rate", type=float, default=0.2)
  p.add_argument(
    "--rows", type=int, default=40_000, help="generated training rows (val, test: a quarter each)"
  )
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument("--val-fraction", type=float, default=0.1)
  p.add_argument(
    "--models",
    default="mmoe,ple,shared_bottom",
    help="comma-separated names from pub_optax.ranking.models.MODEL_NAMES (single_task: the "
    "one-model-per-task baseline, run with the methods that need no shared parameter)",
  )
  p.add_argument("--methods", default=",".join(RANKING_METHODS))
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--patience", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=512)
  p.add_argument("--preset", default="small")
  p.add_argument("--dropout", type=float, default=0.2)
  p.add_argument("--weight-decay", type=float, default=0.0)
  p.add_argument("--lr-grid", default="3e-3,1e-2,3e-2,1e-1")
  p.add_argument("--no-controls", dest="controls", action="store_false")
  p.add_argument("--multi-fashion", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--fashion-methods", default=",".join(FASHION_METHODS))
  p.add_argument("--fashion-seeds", type=int, default=5)
  p.add_argument("--fashion-epochs", type=int, default=2)
  p.add_argument("--fashion-rows", type=int, default=4_000)
  p.add_argument(
    "--fashion-lr-grid",
    default="3e-3,1e-2,3e-2",
    help="Multi-Fashion learning-rate grid (default: --lr-grid)",
  )
  p.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
  p.add_argument(
    "--runs", default=None, help="JSON-lines file of finished runs (resume); default beside --json"
  )
  p.add_argument("--json", default=None, help="summary JSON")
  p.add_argument("--md", default=None, help="markdown table (default: --json with .md)")
  p.add_argument(
    "--note", default="", help="free text for the markdown header (e.g. how the runs were made)"
  )
  p.add_argument(
    "--no-run",
    action="store_true",
    help="train nothing: summarise the runs already in --runs (e.g. of an interrupted study)",
  )
  p.add_argument("--cache", default=os.path.expanduser("~/.cache/pub_optax_jax"))
  args = p.parse_args(argv)
  if args.quick:
    # A smoke test: compilation dominates at its sizes, so XLA's optimisation passes are skipped.
    jax.config.update("jax_disable_most_optimizations", True)
    args.rows, args.epochs, args.seeds = 2_000, 1, 1
    args.methods = "equal,pub_rms" if args.methods == ",".join(RANKING_METHODS) else args.methods
    args.models = "mmoe" if args.models == "mmoe,ple,shared_bottom" else args.models
    args.conflicts = "0.5" if args.conflicts == "0.2,0.8" else args.conflicts
    args.lr_grid = "1e-2" if args.lr_grid == "3e-3,1e-2,3e-2,1e-1" else args.lr_grid
    args.fashion_methods, args.fashion_seeds, args.fashion_epochs, args.fashion_rows = (
      "equal,pub_rms",
      1,
      1,
      512,
    )
    args.fashion_lr_grid = (
      "1e-2" if args.fashion_lr_grid == "3e-3,1e-2,3e-2" else args.fashion_lr_grid
    )
    args.controls = False
  args.lr_grid = [float(x) for x in args.lr_grid.split(",")]
  if args.runs is None:
    args.runs = (
      (os.path.splitext(args.json)[0] + "_runs.jsonl")
      if args.json
      else os.path.join("runs", "ranking_quick_runs.jsonl" if args.quick else "ranking_runs.jsonl")
    )
  if args.quick and os.path.exists(args.runs) and args.json is None:
    os.remove(args.runs)

  from pub_optax._methods import METHODS
  from pub_optax.ranking.cli import load_data

  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods + args.fashion_methods.split(",") if m not in METHODS]
  if unknown:
    p.error(f"unknown method(s) {unknown}")
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  from pub_optax.ranking.models import MODEL_NAMES

  unknown_models = [m for m in models if m not in MODEL_NAMES]
  if unknown_models or not models:
    p.error(f"unknown or no model(s) {unknown_models}; valid: {', '.join(MODEL_NAMES)}")
  enable_compile_cache(args.cache)
  store = load_runs(args.runs)
  t0 = time.time()
  records = []
  settings = []
  if args.data == "generated":
    for c in [float(x) for x in args.conflicts.split(",")]:
      settings.append(
        (f"generated conflict {c:g}", SimpleNamespace(**{**vars(args), "conflict": c}))
      )
  else:
    settings.append((args.data, SimpleNamespace(**{**vars(args), "conflict": 0.5})))
  data_info = {}
  for name, ns in settings:
    splits = load_data(args.data, ns)
    k = splits["train"].labels.shape[1]
    data_info[name] = {split: len(v) for split, v in splits.items()}
    data_info[name]["positive_rate"] = {
      t: float(splits["train"].labels[:, i].mean())
      for i, t in enumerate(splits["train"].task_names)
    }
    print(f"{name}: {data_info[name]}", flush=True)
    records += study(
      name,
      models,
      methods,
      k,
      lambda model, method, lr, seed, s=splits: ranking_run(s, model, method, lr, seed, args),
      args,
      store,
      args.seeds,
    )
  fsplits = None
  if args.multi_fashion:
    from pub_optax import vision

    try:
      fsplits = vision.multi_fashion_splits(
        args.fashion_dir,
        n_train=args.fashion_rows,
        n_val=max(args.fashion_rows // 5, 256),
        n_test=max(args.fashion_rows // 2, 256),
        seed=0,
      )
    except FileNotFoundError as err:
      if not args.quick:  # the study asked for Multi-Fashion: no silent gap in its tables
        raise
      # The smoke test runs on machines without the Debian package: say so in the output and the JSON.
      data_info["multi-fashion"] = {"not_run": str(err)}
      print(f"multi-fashion: NOT RUN ({err})", flush=True)
  if fsplits is not None:
    data_info["multi-fashion"] = {s: len(v) for s, v in fsplits.items()}
    fm = [m for m in args.fashion_methods.split(",") if m]
    fgrid = (
      [float(x) for x in args.fashion_lr_grid.split(",")] if args.fashion_lr_grid else args.lr_grid
    )
    fargs = SimpleNamespace(
      **{**vars(args), "controls": args.controls and not args.quick, "lr_grid": fgrid}
    )
    records += study(
      "multi-fashion",
      ["multilenet"],
      fm,
      2,
      lambda model, method, lr, seed: fashion_run(fsplits, method, lr, seed, args),
      fargs,
      store,
      args.fashion_seeds,
    )
  rows = [
    *summarise([r for r in records if r["setting"] != "multi-fashion"], args.seeds, "AUC"),
    *summarise(
      [r for r in records if r["setting"] == "multi-fashion"], args.fashion_seeds, "accuracy"
    ),
  ]
  ranking_rows = [r for r in rows if r["setting"] != "multi-fashion"]
  pooled_rows = (
    pooled(ranking_rows) if len({(r["setting"], r["model"]) for r in ranking_rows}) > 1 else []
  )
  table = markdown(rows) + (
    "\n" + pooled_markdown(pooled_rows, "every ranking setting and model") if pooled_rows else ""
  )
  print(table)
  print(f"total {time.time() - t0:.0f} s")
  report = {
    "command": " ".join(
      ["python", "benchmarks/ranking.py"] + (sys.argv[1:] if argv is None else list(argv))
    ),
    "arguments": {k: v for k, v in vars(args).items()},
    "machine": machine_info(("jax", "optax", "flax")),
    "protocol": (
      "learning rate tuned on validation mean AUC (accuracy for Multi-Fashion) over lr_grid with "
      "seed 0; test metrics over seeds 0..S-1 at the tuned rate; paired t-test and sign test "
      "against equal weighting on the per-seed test average; equal_Kx = equal weighting at "
      "K x its tuned rate"
    ),
    "data": data_info,
    "seconds": time.time() - t0,
    "summary": rows,
    "pooled": pooled_rows,
    "runs": records,
  }
  if args.json:
    write_json(args.json, report)
    md = args.md or os.path.splitext(args.json)[0] + ".md"
    header = (
      f"# Ranking benchmark\n\nCommand: `{report['command']}`\n\n"
      f"Protocol: {report['protocol']}.\n\nData: {json.dumps(data_info)}\n\n"
      f"Seeds: {args.seeds} (Multi-Fashion {args.fashion_seeds}); epochs {args.epochs} "
      f"(Multi-Fashion {args.fashion_epochs}), patience {args.patience}, batch {args.batch_size}, "
      f"preset {args.preset}; lr grid {args.lr_grid}. Wall time {report['seconds']:.0f} s.\n"
      + (f"\n{args.note}\n" if args.note else "")
    )
    with open(md, "w") as f:
      f.write(header + table + "\n")
    print(f"wrote {args.json}, {md}, runs in {args.runs}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
