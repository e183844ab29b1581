"""A powered Multi-Fashion study: PUB and its variants against tuned equal weighting on real images.

Multi-Fashion (two Fashion-MNIST items on one 36×36 canvas, one 10-class task per item) trained
with :class:`pub_optax.vision.MultiLeNet` and :func:`pub_optax.vision.fit` for every method.
Protocol:

* **Data** — canvases from the real Fashion-MNIST: training and validation canvases from
  disjoint pools of its 60,000 training images, test canvases from its 10,000 test images
  (:func:`pub_optax.vision.multi_fashion_splits`). Validation and test are large enough that one
  split's sampling error of a task's accuracy, ``√(a(1 − a)/n)``, is a few thousandths.
* **Training** — up to ``--epochs`` epochs, stopped early after ``--patience`` epochs without a
  better validation mean accuracy; the best validation epoch is kept and tested.
* **Tuning** — the learning rate with the best validation mean accuracy averaged over
  ``--tune-seeds`` seeds. If it is at an edge of the grid, the grid is extended one step (the
  grid's ratio) past that edge, until the choice is interior or ``--max-extensions`` steps were
  added on that side; whether the choice is interior is recorded. ``equal_Kx`` is not tuned:
  it is equal weighting at K = 2 × equal's tuned rate, the control for a method whose only
  effect is a larger step.
* **Comparison** — test accuracy at each method's tuned rate over seeds ``0 … --seeds − 1``,
  paired by seed with equal weighting at its tuned rate (same seed: same initialisation and
  batch order). Per task and for the mean over tasks: the mean paired difference, its 95 %
  t-interval and the minimum detectable effect at 80 % power (``study.paired_stats``).

Every finished training run is appended to ``--runs`` (JSON lines), keyed by method, rate, seed,
data and training settings; runs already there are not trained again, so an interrupted study
continues and processes that share one runs file (split by ``--methods``) fill it side by side.
``--budget-s`` starts no new run after that much wall time; what is missing is listed.

Usage (from the repository root, package installed, Fashion-MNIST in ``--fashion-dir``)::

  python benchmarks/fashion_study.py --quick --json /tmp/fashion_study.json
  nice -n 5 python benchmarks/fashion_study.py --runs benchmarks/results/fashion_study_cpu_runs.jsonl \\
      --json benchmarks/results/fashion_study_cpu.json --md benchmarks/results/fashion_study_cpu.md

``--quick`` trains a tiny grid on noise canvases (no data files needed) to check that the study
runs and reports consistently; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
  add_report_options,
  append_run,
  enable_compile_cache,
  load_runs,
  machine_info,
  report_command,
  write_report,
)
from study import choose_rate, ci_text, grid_ratio, num, paired_stats  # noqa: E402

DEFAULT_METHODS = ("equal", "pub", "pub_fixed", "nash_mtl", "equal_Kx")
CONTROL = "equal_Kx"
PACKAGES = ("jax", "jaxlib", "optax", "flax", "numpy", "scipy")
NUM_TASKS = 2


def binomial_se(accuracy: float, n: int) -> float:
  """Standard error of an accuracy measured on ``n`` independent examples."""
  return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)


def load_splits(args) -> dict:
  from pub_optax import vision  # pylint: disable=import-outside-toplevel

  data = None
  if args.quick:
    rng = np.random.default_rng(0)
    data = {
      s: (rng.integers(0, 256, (m, 28, 28)).astype(np.uint8), rng.integers(0, 10, m))
      for s, m in (("train", 300), ("test", 100))
    }
  return vision.multi_fashion_splits(
    args.fashion_dir,
    n_train=args.n_train,
    n_val=args.n_val,
    n_test=args.n_test,
    seed=args.data_seed,
    val_pool=100 if args.quick else 10_000,
    data=data,
  )


class Runner:
  """Trains (or reuses from the runs file) one (method, learning rate, seed) at a time."""

  def __init__(self, args, splits: dict, train: dict):
    self.args, self.splits, self.train = args, splits, train
    self.stored = load_runs(args.runs)
    self.start = time.perf_counter()
    self.missing: list[str] = []
    self.n_run = 0

  def key(self, method: str, rate: float, seed: int) -> str:
    return json.dumps(
      dict(method=method, learning_rate=float(rate), seed=int(seed), train=self.train),
      sort_keys=True,
    )

  def run(self, method: str, rate: float, seed: int) -> dict | None:
    """The run's record, stored or trained now; None when the budget is spent."""
    key = self.key(method, rate, seed)
    if key in self.stored:
      return self.stored[key]
    budget = self.args.budget_s
    if budget is not None and time.perf_counter() - self.start > budget:
      self.missing.append(f"{method} / lr {rate:g} / seed {seed}")
      return None
    record = dict(key=key, **self._train(method, rate, seed))
    self.stored[key] = record
    self.n_run += 1
    append_run(self.args.runs, record)
    print(
      f"  {method:14s} lr {rate:.0e} seed {seed}: val {record['val_mean_accuracy']:.4f} "
      f"test {record['test']['mean']:.4f} epochs {record['epochs_run']} "
      f"{record['seconds']:5.1f} s (elapsed {time.perf_counter() - self.start:6.0f} s)",
      flush=True,
    )
    return record

  def _train(self, method: str, rate: float, seed: int) -> dict:
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from pub_optax import vision  # pylint: disable=import-outside-toplevel
    from pub_optax._methods import make_method  # pylint: disable=import-outside-toplevel

    model = vision.MultiLeNet(rngs=nnx.Rngs(seed))
    tx = make_method(
      method, rate, num_tasks=NUM_TASKS, shared=model.shared_mask(), inject_learning_rate=True
    )
    t0 = time.perf_counter()
    result = vision.fit(
      model,
      tx,
      self.splits,
      epochs=self.train["epochs"],
      batch_size=self.train["batch_size"],
      seed=seed,
      patience=self.train["patience"],
    )
    names = self.splits["train"].task_names
    kept = result["history"][: result["best_epoch"] + 1]
    return dict(
      method=method,
      learning_rate=float(rate),
      seed=int(seed),
      val_mean_accuracy=result["val"]["mean_accuracy"],
      test={
        **dict(zip(names, result["test"]["accuracy"])),
        "mean": result["test"]["mean_accuracy"],
      },
      best_epoch=result["best_epoch"] + 1,
      epochs_run=result["epochs_run"],
      weights=np.mean([r["weights"] for r in kept], axis=0).tolist(),
      shared_update_rms=float(np.median([r["shared_update_rms"] for r in kept])),
      seconds=time.perf_counter() - t0,
    )


def tune(runner: Runner, method: str) -> dict | None:
  """Validation mean accuracy by rate over the tuning seeds, the grid extended past an edge."""
  args = runner.args
  grid = sorted(args.lrs)
  seeds = range(args.tune_seeds)
  val: dict[float, float] = {}
  extended = {"low": 0, "high": 0}
  rates = list(grid)
  while True:
    for rate in rates:
      records = [runner.run(method, rate, s) for s in seeds]
      if any(r is None for r in records):
        return None
      val[rate] = float(np.mean([r["val_mean_accuracy"] for r in records]))
    best, interior, extension = choose_rate(val, extended, args.max_extensions, grid_ratio(grid))
    if extension is None:
      break
    side, rate = extension
    extended[side] += 1
    rates = [rate]
  return dict(val_by_rate=val, tuned_lr=best, interior=bool(interior), extended=extended)


def _spread(values) -> dict:
  v = np.asarray(values, float)
  return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else float("nan"))


def summarise(runner: Runner, tuned: dict, methods: list[str], task_names) -> dict:
  """Test accuracy per method at its tuned rate, and paired differences against equal."""
  seeds = list(range(runner.args.seeds))
  keys = [*task_names, "mean"]
  records = {}
  for method in methods:
    if method in tuned:
      runs = [runner.run(tuned[method]["method"], tuned[method]["tuned_lr"], s) for s in seeds]
      if all(r is not None for r in runs):
        records[method] = runs
  out = {}
  for method, runs in records.items():
    row = dict(
      tuned[method],
      seeds=seeds,
      test={k: _spread([r["test"][k] for r in runs]) for k in keys},
      best_epoch=[r["best_epoch"] for r in runs],
      epochs_run=[r["epochs_run"] for r in runs],
      weights_mean=np.mean([r["weights"] for r in runs], axis=0).tolist(),
      shared_update_rms=float(np.median([r["shared_update_rms"] for r in runs])),
      seconds_per_run=float(np.mean([r["seconds"] for r in runs])),
      delta_vs_equal={},
    )
    if "equal" in records and method != "equal":
      pairs = list(zip(runs, records["equal"]))
      for k in keys:
        row["delta_vs_equal"][k] = paired_stats([r["test"][k] - e["test"][k] for r, e in pairs])
      row["wins"] = sum(r["test"]["mean"] > e["test"]["mean"] for r, e in pairs)
    out[method] = row
  return out


def markdown(result: dict) -> str:
  tasks = result["data"]["tasks"]
  data = result["data"]
  lines = [
    "# Multi-Fashion study: PUB against tuned equal weighting",
    "",
    f"Command: `{result['command']}`",
    "",
    f"Machine: {result['machine'].get('cpu_model')}, {result['machine'].get('platform')}; "
    f"versions {json.dumps(result['machine'].get('versions'))}; date {result['machine'].get('date')}.",
    "",
    f"Data: Multi-Fashion canvases from Fashion-MNIST ({data['source']}): train {data['sizes']['train']}, "
    f"validation {data['sizes']['val']}, test {data['sizes']['test']}. One test accuracy's "
    "sampling error √(a(1−a)/n) at the equal-weighting accuracy: "
    + ", ".join(f"{t} ±{num(data['test_accuracy_se'].get(t))}" for t in tasks)
    + " (common to every method, so it mostly cancels in paired differences).",
    "",
    f"Training: MultiLeNet, batch {result['config']['batch_size']}, up to "
    f"{result['config']['epochs']} epochs, early stopping with patience "
    f"{result['config']['patience']}; rate grid {result['config']['lrs']} (extended up to "
    f"{result['config']['max_extensions']} step per side), tuned on validation mean accuracy "
    f"averaged over {result['config']['tune_seeds']} seeds; test over "
    f"{result['config']['seeds']} seeds at the tuned rate, paired by seed with equal. "
    f"{CONTROL} = equal weighting at {NUM_TASKS} × equal's tuned rate. Wall time "
    f"{result['wall_s']:.0f} s for {result['runs_trained']} runs trained by this command.",
    "",
  ]
  if result.get("note"):
    lines += [result["note"], ""]
  lines += [
    "Test accuracy at each method's tuned rate, mean ± std over seeds; epochs run and best "
    "epoch are medians over seeds; stopped early = runs ended by early stopping before the "
    "epoch cap.",
    "",
    "| method | tuned lr | interior | " + " | ".join(tasks) + " | mean | Δ mean vs equal [95 % CI] "
    "| MDE | p | wins | epochs run (best) | stopped early | weights | s / run | val by lr |",
    "|" + "---|" * (len(tasks) + 13),
  ]
  rows = result["methods"]
  cap = result["config"]["epochs"]
  for method in sorted(rows, key=lambda m: -rows[m]["test"]["mean"]["mean"]):
    row = rows[method]
    d = row["delta_vs_equal"].get("mean")
    compared = "— | — | — | —"
    if d:
      compared = f"{ci_text(d)} | ±{num(d['mde'])} | {num(d['p'], '{:.3f}')} | {row['wins']}/{len(row['seeds'])}"
    val = " ".join(
      f"{float(r):.0e}:{v:.4f}"
      for r, v in sorted(row["val_by_rate"].items(), key=lambda x: float(x[0]))
    )
    lines.append(
      f"| {method} | {row['tuned_lr']:.0e} | {row['interior'] if method != CONTROL else '—'} | "
      + " | ".join(f"{num(row['test'][t]['mean'])} ± {num(row['test'][t]['std'])}" for t in tasks)
      + f" | **{num(row['test']['mean']['mean'])}** ± {num(row['test']['mean']['std'])} | "
      + compared
      + f" | {np.median(row['epochs_run']):.0f} ({np.median(row['best_epoch']):.0f}) | "
      + f"{sum(e < cap for e in row['epochs_run'])}/{len(row['epochs_run'])} | "
      + " ".join(f"{w:.3f}" for w in row["weights_mean"])
      + f" | {row['seconds_per_run']:.0f} | {val} |"
    )
  lines += [
    "",
    "Paired differences against equal, per task (mean [95 % CI], MDE at 80 % power):",
    "",
  ]
  lines += ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
  for method, row in rows.items():
    if not row["delta_vs_equal"]:
      continue
    cells = []
    for t in tasks:
      d = row["delta_vs_equal"][t]
      cells.append(f"{ci_text(d)}, MDE ±{num(d['mde'])}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  if result["missing"]:
    lines += ["", "Not run (budget): " + "; ".join(result["missing"])]
  if result.get("reading"):
    lines += ["", "## Reading", "", result["reading"]]
  return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--quick", action="store_true", help="noise canvases, tiny grid: a smoke run")
  p.add_argument(
    "--methods",
    default=",".join(DEFAULT_METHODS),
    help="equal is the reference: without it (a process filling a shared runs file) no differences",
  )
  p.add_argument("--seeds", type=int, default=10, help="test seeds 0 .. S-1")
  p.add_argument("--tune-seeds", type=int, default=2, help="seeds 0 .. T-1 average validation")
  p.add_argument("--lrs", default="1e-3,3e-3,1e-2")
  p.add_argument("--max-extensions", type=int, default=1)
  p.add_argument("--epochs", type=int, default=15)
  p.add_argument("--patience", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=256)
  p.add_argument("--n-train", type=int, default=10_000)
  p.add_argument("--n-val", type=int, default=10_000)
  p.add_argument("--n-test", type=int, default=10_000)
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
  p.add_argument(
    "--cache",
    default=os.path.expanduser("~/.cache/pub_optax_jax"),
    help="compiled-program cache: one method's runs (every seed and rate) share one program",
  )
  p.add_argument("--budget-s", type=float, default=None, help="start no run after this many s")
  p.add_argument("--runs", default=None, help="JSON-lines file of finished runs (read, appended)")
  add_report_options(p)
  return p


def main(argv=None) -> dict:
  args = _parser().parse_args(argv)
  command = report_command("fashion_study.py", argv)
  if args.quick:
    jax.config.update("jax_disable_most_optimizations", True)
    args.seeds, args.tune_seeds, args.epochs, args.patience, args.max_extensions = 2, 1, 1, 1, 0
    args.n_train, args.n_val, args.n_test, args.batch_size = 128, 64, 64, 64
    if args.lrs == _parser().get_default("lrs"):
      args.lrs = "1e-3"
    if args.methods == _parser().get_default("methods"):
      args.methods = f"equal,pub,{CONTROL}"
  enable_compile_cache(args.cache)
  args.lrs = [float(x) for x in args.lrs.split(",")]
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  splits = load_splits(args)
  train = dict(
    epochs=args.epochs,
    patience=args.patience,
    batch_size=args.batch_size,
    data=dict(
      quick=args.quick,
      seed=args.data_seed,
      **{s: len(v) for s, v in splits.items()},
    ),
  )
  runner = Runner(args, splits, train)
  tuned = {}
  for method in methods:
    if method == CONTROL:
      continue
    info = tune(runner, method)
    if info is not None:
      tuned[method] = dict(info, method=method)
  if CONTROL in methods and "equal" in tuned:
    rate = NUM_TASKS * tuned["equal"]["tuned_lr"]
    tuned[CONTROL] = dict(method="equal", tuned_lr=rate, val_by_rate={}, interior=None)
  task_names = list(splits["train"].task_names)
  rows = summarise(runner, tuned, methods, task_names)
  equal_test = rows.get("equal", {}).get("test", {})
  n_test = len(splits["test"])
  result = dict(
    command=command,
    machine=machine_info(PACKAGES),
    wall_s=time.perf_counter() - runner.start,
    runs_trained=runner.n_run,
    config=dict(
      seeds=args.seeds,
      tune_seeds=args.tune_seeds,
      lrs=args.lrs,
      max_extensions=args.max_extensions,
      epochs=args.epochs,
      patience=args.patience,
      batch_size=args.batch_size,
      methods=methods,
      quick=args.quick,
    ),
    data=dict(
      source="noise canvases (--quick)" if args.quick else args.fashion_dir,
      sizes={s: len(v) for s, v in splits.items()},
      tasks=task_names,
      test_accuracy_se={
        t: binomial_se(equal_test[t]["mean"], n_test) for t in task_names if t in equal_test
      },
    ),
    methods=rows,
    missing=runner.missing,
    note=args.note,
    reading=args.reading,
  )
  write_report(result, args.json, args.md, markdown)
  return result


if __name__ == "__main__":
  main()
