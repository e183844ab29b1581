"""Training throughput of the sweep engine against one Python-loop run per member, on CPU.

A grid of M members (seeds × learning rates) of one model and method is trained two ways:

* **engine** — :class:`pub_optax.ranking.sweep.SweepEngine`: one jitted program per epoch
  (``lax.scan`` over the epoch's device-resident batches of ``vmap`` of the train step over the
  members), the epoch's batches built on the host by ``epoch_batches``, and one vmapped
  evaluation of every member on the validation split;
* **trainer** — what M separate ``pub_optax.ranking.experiment.run(RunConfig(...))`` calls cost:
  per member its own :class:`~pub_optax.ranking.train.Trainer` built by ``run``'s own
  ``_make_trainer`` (the compiled step is shared by every seed and rate, as in one process), its
  epoch trained by ``run``'s own ``_train_epoch`` (one jitted step per batch in a host loop, the
  losses fetched every ``log_every`` steps) and its validation split evaluated by
  ``Trainer.evaluate``.

Model and data: the command's ``--preset small`` MMoE
(``pub_optax.ranking.cli.model_kwargs("mmoe", "small", 0.2)``: embedding width 16, 4 experts of
widths (64, 32), towers (32,), BatchNorm, dropout 0.2) on generated AliExpress-schema rows
(``generate_splits``: 16 categorical fields with tables of 10 to 100,000 ids, 63 numerical
features, 0.2 conversions per click as the command's default), 8192 training rows, batch 512
(the command's default), validation a quarter; methods ``equal`` and ``pub``; grids of M = 1
(1 seed × 1 rate), 4 (2 × 2) and 16 (4 × 4).
Two contrast settings at M = 16 show what the ratio depends on: the same model with every table
capped at 1,000 ids, and a tiny MMoE (width 4, 2 experts of width 8, towers (4,)) on tables of
at most 1,000 ids with batch 64.

Compilation: each side's train and evaluation programs are compiled ahead of time
(``jit(...).lower(...).compile()``, timed; the engine's epoch program for its M members, the
trainer's one step that its M runs share); one epoch of a tiny ``run`` before any timing takes the
process's one-time start-up of the compiler out of the first grid's figures. Steady state: the
first epoch of each side is timed on its own and not counted; then ``rounds`` interleaved rounds (the order alternating), each one whole epoch of
all M members on each side, training and validation timed apart. Per round the ratio
``trainer seconds ÷ engine seconds`` is the engine's member-rows per second over the trainer's
rows per second (M members × rows per epoch, against M runs in a row); reported are medians over
rounds, so slow drift of the shared machine's load cancels in the ratio.

End to end: for the M = 16 grid, ``sweep(...)`` against the 16 ``run(...)`` calls of the same
grid (3 epochs, patience 3), each with its compilation (the trainer's cache of compiled steps is
emptied first, as in a fresh process), evaluation and early-stopping bookkeeping: what a study
pays.

Aim stated for it: engine ≥ 10× the trainer's rows per second per member at the largest grid.

``--quick`` (for CI, under a minute): a tiny MMoE on 256 rows of 4 categorical fields, one grid
of M = 4 for ``equal`` only, 2 rounds, an end-to-end comparison of 1 epoch, and XLA's
optimisation passes skipped.

Usage (from the repository root, package installed):
  python benchmarks/sweep.py [--quick] [--json PATH] [--methods equal,pub] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time

import jax

try:  # python -m benchmarks.sweep
  from benchmarks import common
except ImportError:  # python benchmarks/sweep.py
  import common  # type: ignore[no-redef]

from pub_optax.ranking import experiment
from pub_optax.ranking.cli import model_kwargs
from pub_optax.ranking.data import generate_splits
from pub_optax.ranking.data.batching import iterate_batches, pad_batch
from pub_optax.ranking.experiment import RunConfig, run
from pub_optax.ranking.sweep import SweepEngine, sweep
from pub_optax.ranking.sweep import _padded_eval_batches as padded_eval_batches
from pub_optax.ranking.train import train_batches

AIM = 10.0  # engine rows/s per member ÷ trainer rows/s at the largest grid
RATES = (3e-4, 1e-3, 3e-3, 1e-2)
TINY = dict(embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,), dropout=0.2)

SETTINGS = {
  "small": dict(
    label="small preset, tables up to 100,000 ids",
    model_kwargs=model_kwargs("mmoe", "small", 0.2),
    data={"conversion_rate": 0.2},
    rows=8192,
    batch_size=512,
  ),
  "small_tables_1k": dict(
    label="small preset, tables up to 1,000 ids",
    model_kwargs=model_kwargs("mmoe", "small", 0.2),
    data={"max_cardinality": 1000, "conversion_rate": 0.2},
    rows=8192,
    batch_size=512,
  ),
  "tiny_tables_1k": dict(
    label="tiny MMoE, tables up to 1,000 ids, batch 64",
    model_kwargs=TINY,
    data={"max_cardinality": 1000, "conversion_rate": 0.2},
    rows=2048,
    batch_size=64,
  ),
  "quick": dict(
    label="tiny MMoE, 4 categorical fields, tables up to 1,000 ids, batch 32",
    model_kwargs=TINY,
    data={"max_cardinality": 1000, "click_rate": 0.3, "conversion_rate": 0.3, "n_categorical": 4},
    rows=256,
    batch_size=32,
  ),
}
# (setting, seeds, rates): M = seeds × rates.
FULL = dict(
  grids=(("small", 1, 1), ("small", 2, 2), ("small", 4, 4)),
  contrasts=(("small_tables_1k", 4, 4), ("tiny_tables_1k", 4, 4)),
  end_to_end=("small", 4, 4),
  e2e_methods=("equal", "pub"),
  methods=("equal", "pub"),
  rounds=3,
  e2e_epochs=3,
  e2e_patience=3,
  disable_most_optimizations=False,
)
# --quick: one grid of one method and XLA's optimisation passes skipped (compilation dominates
# at this size; the figures check that the script runs, not the speed; PUB trains through the
# engine in the training command's tests, tests/ranking/test_cli.py).
QUICK = dict(
  grids=(("quick", 2, 2),),
  contrasts=(),
  end_to_end=("quick", 2, 2),
  e2e_methods=("equal",),
  methods=("equal",),
  rounds=2,
  e2e_epochs=1,
  e2e_patience=1,
  disable_most_optimizations=True,
)


class LoadLog:
  """One-minute load averages sampled at the start, after every grid and at the end."""

  def __init__(self):
    self.samples = []
    self.sample()

  def sample(self) -> None:
    self.samples.append(os.getloadavg()[0])

  def summary(self) -> dict:
    return dict(
      min=min(self.samples),
      median=statistics.median(self.samples),
      max=max(self.samples),
      samples=self.samples,
    )


def make_splits(setting: dict) -> dict:
  rows = setting["rows"]
  return generate_splits(rows, rows // 4, rows // 4, seed=0, **setting["data"])


def grid(n_seeds: int, n_rates: int) -> tuple[tuple, tuple]:
  return tuple(range(n_seeds)), RATES[len(RATES) - n_rates :] if n_rates > 1 else (1e-3,)


def base_config(method: str, setting: dict) -> RunConfig:
  return RunConfig(
    model="mmoe",
    method=method,
    batch_size=setting["batch_size"],
    model_kwargs=dict(setting["model_kwargs"]),
  )


def _compile_s(jitted, *args) -> float:
  """Seconds to lower and compile ``jitted`` for ``args``; its later calls reuse the program."""
  start = time.perf_counter()
  jitted.lower(*args).compile()
  return time.perf_counter() - start


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


class EngineSide:
  """The sweep engine: one epoch program and one vmapped evaluation for all members."""

  def __init__(self, config: RunConfig, splits: dict, seeds, rates):
    self.splits = splits
    self.engine = SweepEngine(config, splits["train"], seeds, rates)
    self.state = self.engine.init()

  def compile(self) -> dict:
    """Seconds to compile the epoch program and the evaluation program (ahead of time)."""
    engine, state = self.engine, self.state
    batches = engine.epoch_batches(self.splits["train"], 0)
    eval_batches = padded_eval_batches(self.splits["val"], engine.config.batch_size)
    return dict(
      train_s=_compile_s(engine.train_epoch_program, state, batches, engine.member_seed_index),
      eval_s=_compile_s(engine.predict_program, state.params, state.rest, eval_batches),
    )

  def epoch(self, epoch: int) -> dict:
    engine, train = self.engine, self.splits["train"]
    batches, batches_s = _timed(engine.epoch_batches, train, epoch)
    (self.state, _), program_s = _timed(
      engine.train_epoch_program, self.state, batches, engine.member_seed_index
    )
    start = time.perf_counter()
    engine.evaluate(self.state.params, self.state.rest, self.splits["val"])
    return dict(
      train_s=batches_s + program_s,
      batches_s=batches_s,
      eval_s=time.perf_counter() - start,
    )


class TrainerSide:
  """M separate runs: each member's epoch trained and evaluated as ``experiment.run`` does."""

  def __init__(self, config: RunConfig, splits: dict, seeds, rates):
    self.splits = splits
    self.members = []
    for seed in seeds:
      for rate in rates:
        member = dataclasses.replace(config, seed=seed, learning_rate=rate)
        trainer = experiment._make_trainer(member, splits["train"])
        current = dict(
          params=trainer.params, rest=trainer.rest, opt_state=trainer.tx.init(trainer.params)
        )
        self.members.append([trainer, member, current, dict(epoch=0, steps=0, log=[])])

  def compile(self) -> dict:
    """Seconds to compile the train step and the evaluation step that every member shares."""
    trainer, config, current, _ = self.members[0]
    batch = next(iter(train_batches(self.splits["train"], config.batch_size, 0, 0)))
    eval_batch = next(iterate_batches(self.splits["val"], config.batch_size, shuffle=False))
    eval_batch = pad_batch(eval_batch, config.batch_size)[0]
    args = current["params"], current["rest"]
    return dict(
      train_s=_compile_s(trainer.train_step, *args, current["opt_state"], batch),
      eval_s=_compile_s(trainer.eval_step, *args, eval_batch),
    )

  def epoch(self, epoch: int) -> dict:
    train_s = eval_s = 0.0
    for entry in self.members:
      trainer, config, current, info = entry
      info["epoch"] = epoch
      start = time.perf_counter()
      entry[2] = current = experiment._train_epoch(
        trainer, config, self.splits, current, info, False
      )
      train_s += time.perf_counter() - start
      start = time.perf_counter()
      trainer.evaluate(current["params"], current["rest"], self.splits["val"], config.batch_size)
      eval_s += time.perf_counter() - start
    return dict(train_s=train_s, eval_s=eval_s)


def _median(samples: list[dict], key: str) -> float:
  return statistics.median(s[key] for s in samples)


def _ratio(trainer: list[dict], engine: list[dict], *keys) -> float:
  return statistics.median(
    sum(t[k] for k in keys) / sum(e[k] for k in keys) for t, e in zip(trainer, engine)
  )


def warm_up() -> None:
  """One epoch of a tiny run: the compiler's one-time start-up, outside every timed figure."""
  setting = SETTINGS["quick"]
  config = dataclasses.replace(base_config("equal", setting), epochs=1)
  run(config, make_splits(setting), progress=False)
  experiment._COMPILED.clear()


def bench_grid(cfg: dict, name: str, n_seeds: int, n_rates: int, method: str) -> dict:
  """Steady-state epochs of both sides, interleaved; the first epoch of each timed apart."""
  setting = SETTINGS[name]
  splits = make_splits(setting)
  seeds, rates = grid(n_seeds, n_rates)
  config = base_config(method, setting)
  experiment._COMPILED.clear()  # the trainer side compiles once here, as one process does
  sides = dict(engine=EngineSide(config, splits, seeds, rates))
  sides["trainer"] = TrainerSide(config, splits, seeds, rates)
  compiled = {name: side.compile() for name, side in sides.items()}
  first = {name: side.epoch(0) for name, side in sides.items()}
  samples = {name: [] for name in sides}
  order = list(sides)
  for r in range(cfg["rounds"]):
    for side in order if r % 2 == 0 else order[::-1]:
      samples[side].append(sides[side].epoch(r + 1))
  members = len(seeds) * len(rates)
  steps = len(splits["train"]) // setting["batch_size"]
  rows = steps * setting["batch_size"]
  engine_s, trainer_s = (
    _median(samples["engine"], "train_s"),
    _median(samples["trainer"], "train_s"),
  )
  return dict(
    setting=name,
    setting_label=setting["label"],
    method=method,
    members=members,
    seeds=list(seeds),
    learning_rates=list(rates),
    rows_per_epoch=rows,
    steps_per_epoch=steps,
    rounds=cfg["rounds"],
    engine_epoch_s=engine_s,
    trainer_epoch_s=trainer_s,
    engine_member_rows_per_s=members * rows / engine_s,
    trainer_rows_per_s=members * rows / trainer_s,
    engine_ms_per_step_per_member=1e3 * engine_s / steps / members,
    trainer_ms_per_step=1e3 * trainer_s / steps / members,
    ratio=_ratio(samples["trainer"], samples["engine"], "train_s"),
    round_ratios=[
      t["train_s"] / e["train_s"] for t, e in zip(samples["trainer"], samples["engine"])
    ],
    ratio_with_eval=_ratio(samples["trainer"], samples["engine"], "train_s", "eval_s"),
    engine_batches_s=_median(samples["engine"], "batches_s"),
    engine_eval_s=_median(samples["engine"], "eval_s"),
    trainer_eval_s=_median(samples["trainer"], "eval_s"),
    engine_first_epoch_s=first["engine"]["train_s"],
    trainer_first_epoch_s=first["trainer"]["train_s"],
    engine_compile_s=compiled["engine"]["train_s"],
    trainer_compile_s=compiled["trainer"]["train_s"],
    engine_eval_compile_s=compiled["engine"]["eval_s"],
    trainer_eval_compile_s=compiled["trainer"]["eval_s"],
    samples=samples,
  )


def bench_end_to_end(cfg: dict, method: str, engine_first: bool) -> dict:
  """``sweep`` against one ``run`` per member, each from a cold start, compilation included."""
  name, n_seeds, n_rates = cfg["end_to_end"]
  setting = SETTINGS[name]
  splits = make_splits(setting)
  seeds, rates = grid(n_seeds, n_rates)
  epochs, patience = cfg["e2e_epochs"], cfg["e2e_patience"]
  kwargs = dict(epochs=epochs, patience=patience)

  def engine():
    return sweep(
      "mmoe", method, splits, seeds=seeds, learning_rates=rates,
      batch_size=setting["batch_size"], model_kwargs=setting["model_kwargs"], **kwargs,
    )  # fmt: skip

  def trainer():
    experiment._COMPILED.clear()
    config = dataclasses.replace(base_config(method, setting), **kwargs)
    return [
      run(dataclasses.replace(config, seed=s, learning_rate=r), splits, progress=False)
      for s in seeds
      for r in rates
    ]

  results, seconds = {}, {}
  for side, fn in (("engine", engine), ("trainer", trainer))[:: 1 if engine_first else -1]:
    start = time.perf_counter()
    results[side] = fn()
    seconds[side] = time.perf_counter() - start
  val_diff = max(
    (
      abs(a["best_val_mean_auc"] - b["val_history"][b["best_epoch"] - 1]["mean_auc"])
      for a, b in zip(results["engine"], results["trainer"])
      if a["best_epoch"] > 0 and b["best_epoch"] > 0
    ),
    default=math.nan,
  )
  return dict(
    setting=name,
    method=method,
    members=len(seeds) * len(rates),
    epochs=epochs,
    patience=patience,
    engine_s=seconds["engine"],
    trainer_s=seconds["trainer"],
    ratio=seconds["trainer"] / seconds["engine"],
    order="engine first" if engine_first else "trainer first",
    epochs_run=[r["epochs_run"] for r in results["engine"]],
    same_best_epoch=sum(
      a["best_epoch"] == b["best_epoch"] for a, b in zip(results["engine"], results["trainer"])
    ),
    max_best_val_auc_diff=val_diff,
  )


COLUMNS = [
  ("method", "method"),
  ("members", "M"),
  ("engine_member_rows_per_s", "engine rows/s/member", ".0f"),
  ("trainer_rows_per_s", "trainer rows/s", ".0f"),
  ("ratio", "ratio", ".2f"),
  ("ratio_with_eval", "ratio w/ eval", ".2f"),
  ("engine_ms_per_step_per_member", "engine ms/step/member", ".1f"),
  ("trainer_ms_per_step", "trainer ms/step", ".1f"),
  ("engine_batches_s", "batches s", ".3f"),
  ("engine_eval_s", "engine eval s", ".2f"),
  ("trainer_eval_s", "trainer eval s", ".2f"),
  ("engine_compile_s", "engine compile s", ".1f"),
  ("trainer_compile_s", "trainer compile s", ".1f"),
]
E2E_COLUMNS = [
  ("method", "method"),
  ("members", "M"),
  ("epochs", "epochs"),
  ("engine_s", "sweep s", ".1f"),
  ("trainer_s", "M runs s", ".1f"),
  ("ratio", "ratio", ".2f"),
  ("order", "order"),
  ("same_best_epoch", "same best epoch"),
  ("max_best_val_auc_diff", "max |Δ best val AUC|", ".4f"),
]


def summarize(cfg: dict, rows: list[dict], end_to_end: list[dict]) -> dict:
  largest = max(r["members"] for r in rows if r["setting"] == cfg["grids"][-1][0])
  at_largest = {
    r["method"]: r["ratio"]
    for r in rows
    if r["members"] == largest and r["setting"] == cfg["grids"][-1][0]
  }
  return dict(
    aim=AIM,
    largest_members=largest,
    ratio_at_largest=at_largest,
    aim_met=all(v >= AIM for v in at_largest.values()),
    end_to_end_ratio={r["method"]: r["ratio"] for r in end_to_end},
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny model and data, M <= 4 (< 1 min)")
  parser.add_argument("--json", metavar="PATH", help="write every figure and the configuration")
  parser.add_argument("--methods", help="comma-separated methods (default: equal,pub)")
  parser.add_argument("--rounds", type=int, help="steady-state rounds per grid")
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
  if args.methods:
    cfg["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    cfg["e2e_methods"] = (
      tuple(m for m in cfg["e2e_methods"] if m in cfg["methods"]) or cfg["methods"][:1]
    )
  if args.rounds:
    cfg["rounds"] = args.rounds
  jax.config.update("jax_disable_most_optimizations", cfg["disable_most_optimizations"])
  cfg["settings"] = {
    name: SETTINGS[name] for name in {g[0] for g in cfg["grids"] + cfg["contrasts"]}
  }

  start, load = time.perf_counter(), LoadLog()
  if not args.quick:
    warm_up()
  rows = []
  for name, n_seeds, n_rates in cfg["grids"] + cfg["contrasts"]:
    for method in cfg["methods"]:
      t0 = time.perf_counter()
      rows.append(bench_grid(cfg, name, n_seeds, n_rates, method))
      load.sample()
      print(
        f"{name} {method} M={n_seeds * n_rates}: ratio {rows[-1]['ratio']:.2f} "
        f"({time.perf_counter() - t0:.0f}s)",
        file=sys.stderr,
        flush=True,
      )
  end_to_end = []
  for i, method in enumerate(cfg["e2e_methods"]):
    end_to_end.append(bench_end_to_end(cfg, method, engine_first=i % 2 == 0))
    load.sample()
  wall = time.perf_counter() - start
  info = common.machine_info(packages=("jax", "jaxlib", "numpy", "optax", "flax"))
  info["load_average_1min"] = load.summary()
  summary = summarize(cfg, rows, end_to_end)

  print(
    f"\nSweep engine vs one Python-loop run per member ({info.get('jax_backend')}, "
    f"{info['cpu_model']}, {info['cpu_count']} cores, load {load.summary()['median']:.1f})"
  )
  for name in dict.fromkeys(r["setting"] for r in rows):
    print(f"\n{SETTINGS[name]['label']}:")
    common.print_table([r for r in rows if r["setting"] == name], COLUMNS)
  print("\nend to end (compilation, evaluation and early stopping included):")
  common.print_table(end_to_end, E2E_COLUMNS)
  print(
    f"\nratio at M = {summary['largest_members']}: "
    + ", ".join(f"{m} {v:.2f}" for m, v in summary["ratio_at_largest"].items())
    + f" (aim >= {AIM:g}: {summary['aim_met']}); wall time {wall:.0f}s"
  )
  if args.json:
    common.write_json(
      args.json,
      dict(
        benchmark="sweep",
        config=cfg,
        machine=info,
        summary=summary,
        rows=rows,
        end_to_end=end_to_end,
        wall_s=wall,
      ),
    )
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
