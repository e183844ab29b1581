"""``pub-optax train``: PUB against baselines on a multi-task ranking model, with a results table.

Examples::

  pub-optax train                                   # generated data, PUB vs equal weighting
  pub-optax train --methods pub,nash_mtl,equal --seeds 3 --epochs 5
  pub-optax train --data aliexpress:/data/AliExpress_NL --preset paper --epochs 50
  pub-optax methods                                 # the methods and their references
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np

import pub_optax
from pub_optax._methods import METHODS, method_names
from pub_optax.ranking.data import (
  generate_splits,
  load_aliccp,
  load_aliexpress,
  load_aliexpress_raw,
)
from pub_optax.ranking.data.types import DataError, RankingData, require_both_classes
from pub_optax.ranking.experiment import (
  CheckpointError,
  RunConfig,
  atomic_write_bytes,
  atomic_write_json,
  data_fingerprint,
  remove_orphaned_temporaries,
  run,
)
from pub_optax.ranking.models import MODEL_NAMES, PRESETS, model_kwargs
from pub_optax.ranking.sweep import run_seeds


class UsageError(ValueError):
  """A command-line value that cannot be used (reported by argparse as a usage error)."""


def _number_text(text: str) -> str:
  """``text`` as the user wrote it when it is a number, else quoted."""
  try:
    float(text)
  except ValueError:
    return repr(text)
  return text


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
  return value


def non_negative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
  return value


def bounded_float(low: float, high: float, low_open: bool, high_open: bool):
  """argparse type: a float in the interval ``[low, high]``, each end open or closed."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      value = float("nan")
    inside = (low < value if low_open else low <= value) and (
      value < high if high_open else value <= high
    )
    if not inside:
      raise argparse.ArgumentTypeError(f"must be in {interval}, got {_number_text(text)}")
    return value

  parse.__name__ = f"number in {interval}"
  return parse


def non_negative_float(text: str) -> float:
  """argparse type: a finite float >= 0."""
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not (np.isfinite(value) and value >= 0):
    raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {_number_text(text)}")
  return value


def split_validation(
  train: RankingData, fraction: float, seed: int
) -> tuple[RankingData, RankingData]:
  """A seeded random ``fraction`` of ``train`` held out for early stopping."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"--val-fraction must be in (0, 1), got {fraction}")
  order = np.random.default_rng(seed).permutation(len(train))
  n_val = max(int(round(fraction * len(train))), 1)
  return train.take(np.sort(order[n_val:])), train.take(np.sort(order[:n_val]))


DATA_KINDS = ("generated", "aliexpress", "aliexpress-raw", "aliccp")


def parse_data_spec(spec: str) -> tuple[str, str, str]:
  """``--data`` as ``(kind, directory, country)`` (empty strings where they do not apply).

  Raises:
    UsageError: an unknown kind, or a path or country missing.
  """
  kind, _, rest = spec.partition(":")
  if kind not in DATA_KINDS:
    raise UsageError(
      f"unknown --data kind {kind!r}; valid: generated, aliexpress:DIR, aliexpress-raw:DIR:CC, "
      "aliccp:DIR"
    )
  if kind == "generated":
    return kind, "", ""
  if not rest:
    raise UsageError(f"--data {spec!r}: give a path, e.g. {kind}:/path/to/files")
  if kind != "aliexpress-raw":
    return kind, rest, ""
  directory, _, country = rest.rpartition(":")
  if not directory or not country:
    raise UsageError(
      f"--data {spec!r}: use aliexpress-raw:DIR:COUNTRY, e.g. aliexpress-raw:/data:NL"
    )
  return kind, directory, country


def load_data(spec: str, args) -> dict[str, RankingData]:
  """``generated`` | ``aliexpress:DIR`` | ``aliexpress-raw:DIR:CC`` | ``aliccp:DIR`` -> train/val/test.

  Raises:
    UsageError: a malformed ``spec``.
    DataError, FileNotFoundError: files that are missing or cannot be read as that format.
  """
  kind, directory, country = parse_data_spec(spec)
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
  if kind == "aliexpress":
    loaded = load_aliexpress(directory)
  elif kind == "aliexpress-raw":
    loaded = load_aliexpress_raw(directory, country)
  else:
    loaded = load_aliccp(directory)
  train, val = split_validation(loaded["train"], args.val_fraction, args.data_seed)
  return {"train": train, "val": val, "test": loaded["test"]}


def parse_methods(text: str) -> list[str]:
  """``--methods``: known method names, comma-separated, each once.

  Raises:
    UsageError: an empty list, a name listed twice or an unknown name.
  """
  methods = [m.strip() for m in text.split(",") if m.strip()]
  if not methods:
    raise UsageError(f"--methods: no method given; valid: {', '.join(method_names())}")
  repeated = [m for i, m in enumerate(methods) if m in methods[:i]]
  if repeated:
    raise UsageError(f"--methods: {repeated[0]!r} is listed twice (use --seeds for repeats)")
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise UsageError(f"--methods: unknown method(s) {unknown}; valid: {', '.join(method_names())}")
  return methods


def _rate(text: str, method: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not (np.isfinite(value) and value > 0):
    raise UsageError(
      f"--lr: learning rate of {method} must be a finite number > 0, got {_number_text(text)}"
    )
  return value


def parse_rates(text: str, methods: Sequence[str]) -> dict[str, float]:
  """``1e-3`` for every method, or ``pub=1e-3,equal=2e-3`` (unnamed methods take ``default=``).

  Raises:
    UsageError: a rate that is not a finite positive number, an item that is not
      ``METHOD=RATE``, a method that is not run, or a method left without a rate.
  """
  if "=" not in text:
    return {m: _rate(text.strip(), m) for m in methods}
  pairs = {}
  for item in text.split(","):
    name, equals, value = item.partition("=")
    if not equals or not name.strip():
      raise UsageError(f"--lr: {item!r} is not METHOD=RATE")
    pairs[name.strip()] = value.strip()
  unknown = sorted(set(pairs) - set(methods) - {"default"})
  if unknown:
    raise UsageError(f"--lr: names methods that are not run: {unknown}")
  default = pairs.get("default")
  missing = [m for m in methods if m not in pairs and default is None]
  if missing:
    raise UsageError(f"--lr: gives no learning rate for {missing}; add default=VALUE")
  return {m: _rate(pairs.get(m, default), m) for m in methods}


def check_output_folder(path: str) -> None:
  """Creates ``path`` if needed and checks that a file can be written there.

  Raises:
    UsageError: ``path`` is a file, or the folder cannot be created or written to.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f"--out {path}: is a file, not a folder")
  try:
    os.makedirs(path, exist_ok=True)
    handle, probe = tempfile.mkstemp(prefix=".write-check", dir=path)
    os.close(handle)
    os.remove(probe)
  except OSError as err:
    raise UsageError(f"--out {path}: cannot write there: {err.strerror}") from None


def _metric_keys(task_names: Sequence[str]) -> list[str]:
  return [f"{t}_auc" for t in task_names] + ["mean_auc"] + [f"{t}_logloss" for t in task_names]


def summarise(results: list[dict], task_names: Sequence[str]) -> list[dict]:
  """Mean and std over seeds of every test metric, one row per method.

  Runs that diverged are left out of the means and listed in the row's ``"diverged"``
  (``seed``, ``epoch``); a method whose every run diverged has NaN metrics.
  """
  rows = []
  for method in dict.fromkeys(r["config"]["method"] for r in results):
    runs = [r for r in results if r["config"]["method"] == method]
    finished = [r for r in runs if not r.get("diverged")]
    row = {
      "method": method,
      "seeds": len(finished),
      "learning_rate": runs[0]["config"]["learning_rate"],
      "diverged": [
        {"seed": r["config"]["seed"], "epoch": r["diverged"]["epoch"]}
        for r in runs
        if r.get("diverged")
      ],
    }
    for key in _metric_keys(task_names):
      values = np.array([r["test"][key] for r in finished], dtype=float)
      row[key] = float(np.mean(values)) if len(values) else float("nan")
      row[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    row["best_epoch"] = (
      float(np.mean([r["best_epoch"] for r in finished])) if finished else float("nan")
    )
    rms = [e["shared_update_rms"] for r in finished for e in r["log"]]
    row["shared_update_rms"] = float(np.median(rms)) if rms else float("nan")
    rows.append(row)
  return rows


def _cell(row: dict, key: str) -> str:
  if row["seeds"] == 0:
    return "-"
  if row["seeds"] == 1:
    return f"{row[key]:.4f}"
  return f"{row[key]:.4f}±{row[key + '_std']:.4f}"


def format_table(rows: list[dict], task_names: Sequence[str]) -> str:
  """The results table: test AUC and logloss per task, mean AUC, as mean ± std over seeds.

  With one seed a value is printed alone; a method with diverged runs says so in its
  ``diverged`` column. A legend explaining every column follows the table.
  """
  cols = _metric_keys(task_names)
  header = ["method", "lr"] + [c.replace("_", " ") for c in cols] + ["best ep", "upd rms", "seeds"]
  header += ["diverged"] if any(r.get("diverged") for r in rows) else []
  lines = [header]
  for r in rows:
    cells = [r["method"], f"{r['learning_rate']:.0e}"] + [_cell(r, c) for c in cols]
    cells += [
      f"{r['best_epoch']:.1f}" if r["seeds"] else "-",
      f"{r['shared_update_rms']:.1e}" if r["seeds"] else "-",
      str(r["seeds"]),
    ]
    if len(header) > len(cells):
      cells.append(
        ", ".join(f"seed {d['seed']} at epoch {d['epoch']}" for d in r.get("diverged", ())) or "-"
      )
    lines.append(cells)
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
  out.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(out + ["", legend(task_names, any(r["seeds"] > 1 for r in rows))])


def legend(task_names: Sequence[str], with_std: bool) -> str:
  """What every column of :func:`format_table` means."""
  spread = " (mean ± std over seeds)" if with_std else ""
  lines = [
    "lr: learning rate",
    f"<task> auc, <task> logloss: test metrics of the epoch with the best validation mean AUC"
    f"{spread}; tasks: {', '.join(task_names)}",
    "mean auc: average of the task AUCs",
    "best ep: that epoch (mean over seeds)",
    "upd rms: median over logged steps of the RMS of the update applied to the shared parameters",
    "seeds: runs averaged (diverged runs excluded)",
  ]
  return "\n".join(lines)


def _plot_title(results: list[dict], data: str) -> str:
  rates = dict.fromkeys(
    (r["config"]["method"], r["config"]["learning_rate"]) for r in results
  ).keys()
  lr_values = {lr for _, lr in rates}
  lr_text = (
    f"lr {next(iter(lr_values)):g}"
    if len(lr_values) == 1
    else "lr " + ", ".join(f"{m} {lr:g}" for m, lr in rates)
  )
  return f"model {results[0]['config']['model']}, data {data}, {lr_text}"


def curves_figure(results: list[dict], task_names: Sequence[str] = (), data: str = ""):
  """The figure of :func:`plot` (a matplotlib ``Figure``; the caller closes it).

  Args:
    results: the runs, as returned by :func:`~pub_optax.ranking.experiment.run`.
    task_names: labels of the task-weight curves (default: ``task 0``, ``task 1``, ...).
    data: the data's description for the title.

  Returns:
    A figure with three panels: validation mean AUC per epoch, task weights and the RMS
    of the applied shared update per training step.
  """
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
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
          name = task_names[k] if k < len(task_names) else f"task {k}"
          axes[1].plot(
            steps,
            weights[:, k],
            color=colors[m],
            ls=["-", "--", ":", "-."][k % 4],
            label=f"{m} {name}",
          )
      axes[2].semilogy(steps, [e["shared_update_rms"] for e in r["log"]], color=colors[m], label=m)
  axes[0].set(title="validation mean AUC", xlabel="epoch", ylabel="mean AUC over tasks")
  axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
  axes[1].set(title="task weights α̂ (first seed)", xlabel="training step", ylabel="weight")
  axes[2].set(
    title="RMS of the applied shared update (first seed)", xlabel="training step", ylabel="RMS"
  )
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  if results:
    fig.suptitle(_plot_title(results, data))
  fig.tight_layout()
  return fig


def plot(
  results: list[dict], path: str, task_names: Sequence[str] = (), data: str = ""
) -> str | None:
  """Writes :func:`curves_figure` to ``path`` as a PNG (atomically).

  Returns:
    ``None``, or why no PNG was written.
  """
  try:
    import matplotlib
  except ImportError:
    return "matplotlib is not installed (pip install 'pub_optax[plot]'): PNG skipped"
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = curves_figure(results, task_names, data)
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
  """Shows every option's default and keeps the examples' line breaks."""


ENGINES = ("sweep", "loop")

CHECKPOINT_HELP = (
  "rewritten after every epoch in OUT/checkpoints: one file per method (--engine sweep) or "
  "per method and seed (--engine loop), holding the settings, a fingerprint of the data, the "
  "parameters and optimizer state of the last epoch and the parameters of the best one "
  "(stored as their difference from the initial ones, compressed), and the history so far"
)


def _add_data_options(t: argparse.ArgumentParser) -> None:
  """Where the data comes from (generated or real files)."""
  g = t.add_argument_group("data")
  g.add_argument(
    "--data",
    default="generated",
    help="generated | aliexpress:DIR | aliexpress-raw:DIR:CC | aliccp:DIR",
  )
  g.add_argument(
    "--rows",
    type=positive_int,
    default=40_000,
    help="generated training rows (val and test: a quarter each)",
  )
  g.add_argument(
    "--conflict",
    type=bounded_float(0, 1, False, False),
    default=0.5,
    help="generated data: 0 aligned tasks, 0.5 orthogonal, 1 opposed",
  )
  g.add_argument(
    "--conversion-rate",
    type=bounded_float(0, 1, True, False),
    default=0.2,
    help="generated data: conversions per click (real AliExpress: about 0.02; the default keeps "
    "enough CTCVR positives for a short run)",
  )
  g.add_argument(
    "--data-seed",
    type=non_negative_int,
    default=0,
    help="seed of the generated data and of the validation split of real data",
  )
  g.add_argument(
    "--val-fraction",
    type=bounded_float(0, 1, True, True),
    default=0.1,
    help="real data: share of train held out for early stopping",
  )


def _add_model_options(t: argparse.ArgumentParser) -> None:
  """Which ranking model, and its size."""
  g = t.add_argument_group("model")
  g.add_argument("--model", default="mmoe", choices=MODEL_NAMES, help="the ranking model")
  g.add_argument(
    "--preset", default="small", choices=PRESETS, help="model size: small (CPU) or paper settings"
  )
  g.add_argument(
    "--dropout", type=bounded_float(0, 1, False, True), default=0.2, help="dropout rate"
  )


def _add_training_options(t: argparse.ArgumentParser) -> None:
  """Methods, seeds, epochs, batches, rates."""
  g = t.add_argument_group("training")
  g.add_argument(
    "--methods",
    default="pub,equal",
    help=f"comma-separated, each once; valid: {', '.join(method_names())}",
  )
  g.add_argument(
    "--seeds",
    type=positive_int,
    default=3,
    help="number of seeds (0..N-1); the table gives each metric as mean ± std over them",
  )
  g.add_argument(
    "--engine",
    default="sweep",
    choices=ENGINES,
    help="sweep: the seeds of a method train together in one compiled program (vmap over "
    "seeds); loop: one run per seed, one step at a time. --sparse-embeddings trains with the "
    "loop (the sweep engine takes dense embedding gradients only)",
  )
  # 2: on the default generated data at --lr 3e-2, validation chose epoch 1 or 2 in each of the
  # six runs of 3 epochs (3 seeds of pub and of equal); a third epoch only costs time.
  g.add_argument(
    "--epochs",
    type=positive_int,
    default=2,
    help="maximum number of epochs (at the default --lr 3e-2 on generated data, validation "
    "chooses epoch 1 or 2)",
  )
  g.add_argument(
    "--patience",
    type=positive_int,
    default=3,
    help="stop after this many epochs without a better validation mean AUC",
  )
  g.add_argument("--batch-size", type=positive_int, default=512, help="rows per batch")
  # 3e-2: the rate most often chosen on validation for equal weighting and PUB (convex) in the
  # short-budget study of benchmarks/ranking.py (benchmarks/results/ranking_cpu.md).
  g.add_argument(
    "--lr",
    default="3e-2",
    help="one rate, or per method: pub=1e-3,equal=2e-3,default=1e-3 (3e-2 suits short runs "
    "on generated data; the paper used 1e-3 for up to 50 epochs)",
  )
  g.add_argument(
    "--weight-decay",
    type=non_negative_float,
    default=0.0,
    help="decoupled weight decay per step",
  )
  g.add_argument(
    "--sparse-embeddings",
    action="store_true",
    help="per-task gradients of the embedding tables at the batch's rows only (same results, "
    "less memory and time; not for the AdaTask and Clippy methods)",
  )


def _add_output_options(t: argparse.ArgumentParser) -> None:
  """Where results and checkpoints go."""
  g = t.add_argument_group("output")
  g.add_argument(
    "--out",
    default="runs/latest",
    help=f"folder for results.json, table.txt, curves.png and checkpoints ({CHECKPOINT_HELP})",
  )
  g.add_argument(
    "--resume",
    action="store_true",
    help="continue an interrupted run from its checkpoints; every option but --epochs must be "
    "the same as before and the data unchanged, or the command stops with the differences",
  )
  g.add_argument(
    "--no-progress",
    action="store_true",
    help="no progress bars (per-epoch validation lines are still printed)",
  )


def build_parser() -> argparse.ArgumentParser:
  """The ``pub-optax`` argument parser (``train`` and ``methods`` commands)."""
  parser = argparse.ArgumentParser(
    prog="pub-optax",
    description=__doc__.split("\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument("--version", action="version", version=f"%(prog)s {pub_optax.__version__}")
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser(
    "train",
    help="train a ranking model with one or more methods and compare them",
    description="Train a ranking model with one or more methods and compare them on test data.",
    formatter_class=_HelpFormatter,
    allow_abbrev=False,
  )
  for add in (_add_data_options, _add_model_options, _add_training_options, _add_output_options):
    add(t)
  sub.add_parser("methods", help="list the methods")
  return parser


# Options that define what a run computes; --resume refuses to continue with others.
COMMON_RUN_OPTIONS = (
  "engine",
  "model",
  "preset",
  "dropout",
  "seeds",
  "patience",
  "batch_size",
  "weight_decay",
  "sparse_embeddings",
)
GENERATED_DATA_OPTIONS = ("data", "rows", "conflict", "conversion_rate", "data_seed")
REAL_DATA_OPTIONS = ("data", "val_fraction", "data_seed")


def run_options(args, methods: Sequence[str], rates: dict[str, float]) -> dict:
  """The options that define what a ``train`` command computes (not --epochs, --out, ...)."""
  data_options = GENERATED_DATA_OPTIONS if args.data == "generated" else REAL_DATA_OPTIONS
  options = {name: getattr(args, name) for name in COMMON_RUN_OPTIONS + data_options}
  options.update(methods=list(methods), lr=dict(rates))
  return json.loads(json.dumps(options))


def _option_name(key: str) -> str:
  return "--" + key.replace("_", "-")


def _differences(saved: dict, options: dict) -> list[str]:
  return [
    f"{_option_name(key)} {saved.get(key)!r} (now {options[key]!r})"
    for key in options
    if saved.get(key) != options[key]
  ]


def check_resume(saved: dict, options: dict, fingerprint: dict | None, path: str) -> None:
  """Refuses to resume when the options or the data differ from those saved in ``path``.

  Args:
    saved: the record written by the checkpointed run (``{"options", "data"}``).
    options: this command's :func:`run_options`.
    fingerprint: this command's data fingerprint, or ``None`` to compare the options only.
    path: the record's file, for the message.

  Raises:
    CheckpointError: naming every differing option, or saying that the data differ.
  """
  differing = _differences(saved["options"], options)
  if differing:
    raise CheckpointError(
      f"--resume: the run in {os.path.dirname(os.path.dirname(path)) or '.'} used other "
      f"options: {'; '.join(differing)}; resume with the same options or drop --resume"
    )
  if fingerprint is not None and saved["data"] != fingerprint:
    raise CheckpointError(
      f"--resume: the data differ from those of the checkpointed run ({path}); "
      "resume with the same data or drop --resume"
    )


def _run_record(args) -> str:
  return os.path.join(args.out, "checkpoints", "command.json")


def _saved_run(args) -> dict | None:
  """The record of the checkpointed run in ``--out`` when resuming, else ``None``."""
  record = _run_record(args)
  if not (args.resume and os.path.exists(record)):
    return None
  try:
    with open(record) as f:
      return json.load(f)
  except (OSError, ValueError) as err:
    raise CheckpointError(f"{record}: cannot be read ({err}); drop --resume") from None


def _remove_orphans(args) -> None:
  for folder in (args.out, os.path.join(args.out, "checkpoints")):
    for path in remove_orphaned_temporaries(folder):
      print(f"removed {path}, left by an interrupted write", file=sys.stderr)


def _print_epoch(method: str, seed: int, epochs: int, task_names: Sequence[str]):
  def show(val: dict) -> None:
    aucs = " ".join(f"{t} {val[f'{t}_auc']:.4f}" for t in task_names)
    best = "  (best so far)" if val["best"] else ""
    print(
      f"{method} seed {seed} epoch {val['epoch']}/{epochs}: validation AUC {aucs} "
      f"mean {val['mean_auc']:.4f}{best}",
      flush=True,
    )

  return show


def _print_run_end(result: dict) -> None:
  config = result["config"]
  label = f"{config['method']} seed {config['seed']}"
  if result["diverged"]:
    d = result["diverged"]
    print(f"{label}: DIVERGED at epoch {d['epoch']} (step {d['step']}: {d['reason']})", flush=True)
  else:
    best = result["val_history"][result["best_epoch"] - 1]["mean_auc"]
    print(
      f"{label}: chosen epoch {result['best_epoch']} of {result['epochs_run']} "
      f"(best validation mean AUC {best:.4f})",
      flush=True,
    )


def _describe_data(args, splits: dict[str, RankingData]) -> str:
  task_names = splits["train"].task_names
  positives = ", ".join(
    f"{t} {splits['train'].labels[:, k].mean():.2%}" for k, t in enumerate(task_names)
  )
  sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "test"))
  return (
    f"data {args.data}: {sizes} rows; tasks {', '.join(task_names)}; positives in train {positives}"
  )


def balances_shared_parameters(method: str) -> bool:
  """Whether ``method`` needs shared parameters: its weights come from their Gram matrix.

  Traced abstractly (no computation) on one parameter that no task shares, with three tasks:
  the fewest that every registered method takes (Krum and the trimmed mean need K >= 3).
  """
  tx = pub_optax.make_method(method, 1e-3, num_tasks=3, shared=False)
  params = {"w": jax.ShapeDtypeStruct((1,), np.float32)}
  grads = {"w": jax.ShapeDtypeStruct((3, 1), np.float32)}
  losses = jax.ShapeDtypeStruct((3,), np.float32)

  def update(params, grads, losses):
    return tx.update(grads, tx.init(params), params, task_losses=losses)

  try:
    jax.eval_shape(update, params, grads, losses)
  except ValueError as err:
    if "selects no leaf" in str(err):
      return True
    raise
  return False


def single_task_methods(
  methods: Sequence[str], rates: dict[str, float]
) -> tuple[list[str], dict[str, float]]:
  """``--model single_task`` shares no parameter: the methods that balance shared ones are dropped.

  Every leaf of the single-task model is task-specific, so a method that weighs the tasks by the
  Gram matrix of their gradients on shared parameters (PUB, Nash-MTL, MGDA, ...) has nothing to
  weigh; on task-specific leaves it would move as equal weighting does. Such methods are dropped
  with a note on stderr, and a list of nothing else is refused.

  Raises:
    UsageError: no listed method can train a model without shared parameters.
  """
  balancing = [m for m in methods if balances_shared_parameters(m)]
  kept = [m for m in methods if m not in balancing]
  if not kept:
    usable = [m for m in METHODS if not balances_shared_parameters(m)]
    raise UsageError(
      f"--model single_task shares no parameter between tasks, so method(s) {balancing} have "
      f"nothing to balance; use equal weighting (--methods equal) or one of: {', '.join(usable)}"
    )
  if balancing:
    print(
      f"note: --model single_task shares no parameter between tasks, so method(s) {balancing} "
      f"would have nothing to balance; running {kept} only",
      file=sys.stderr,
    )
  return kept, {m: rates[m] for m in kept}


def validate(args) -> tuple[list[str], dict[str, float]]:
  """Checks the options that argparse cannot check alone, and the output folder.

  Returns:
    The methods and the learning rate of each.

  Raises:
    UsageError: the first unusable option.
  """
  methods = parse_methods(args.methods)
  dense_only = [m for m in methods if not METHODS[m].row_sparse]
  if args.sparse_embeddings and dense_only:
    raise UsageError(
      f"--sparse-embeddings: method(s) {dense_only} need dense table gradients (AdaTask keeps K "
      "states, Clippy clips per tensor); run them without the flag"
    )
  rates = parse_rates(args.lr, methods)
  if args.model == "single_task":
    methods, rates = single_task_methods(methods, rates)
  parse_data_spec(args.data)
  check_output_folder(args.out)
  return methods, rates


def _prepare(args, methods: Sequence[str], rates: dict[str, float]):
  """Checks a resumed run's options and data, loads the data; returns ``(splits, fingerprint)``."""
  if os.path.exists(os.path.join(args.out, "results.json")) and not args.resume:
    print(
      f"note: {args.out} holds an earlier run; it is overwritten (use --resume to continue it)",
      file=sys.stderr,
    )
  _remove_orphans(args)
  options = run_options(args, methods, rates)
  saved = _saved_run(args)
  if saved:
    check_resume(saved, options, None, _run_record(args))
  splits = load_data(args.data, args)
  require_both_classes(splits)
  fingerprint = data_fingerprint(splits)
  if saved:
    check_resume(saved, options, fingerprint, _run_record(args))
  atomic_write_json(_run_record(args), {"options": options, "data": fingerprint})
  return splits, fingerprint


def _run_config(args, method: str, seed: int, rate: float) -> RunConfig:
  return RunConfig(
    model=args.model,
    method=method,
    seed=seed,
    epochs=args.epochs,
    batch_size=args.batch_size,
    learning_rate=rate,
    weight_decay=args.weight_decay,
    patience=args.patience,
    model_kwargs=model_kwargs(args.model, args.preset, args.dropout),
    sparse_embeddings=args.sparse_embeddings,
  )


def _checkpoint_path(args, name: str) -> str:
  """``OUT/checkpoints/{name}.ckpt``, removed first unless resuming."""
  checkpoint = os.path.join(args.out, "checkpoints", f"{name}.ckpt")
  if not args.resume and os.path.exists(checkpoint):
    os.remove(checkpoint)
  return checkpoint


def _run_one(args, splits, method: str, seed: int, rate: float) -> dict:
  """Trains one method with one seed (resuming from its checkpoint with ``--resume``)."""
  result = run(
    _run_config(args, method, seed, rate),
    splits,
    checkpoint=_checkpoint_path(args, f"{method}_seed{seed}"),
    progress=not args.no_progress,
    on_epoch=_print_epoch(method, seed, args.epochs, splits["train"].task_names),
    on_divergence="record",
  )
  _print_run_end(result)
  return result


def _run_seeds(args, splits, method: str, rate: float) -> list[dict]:
  """Trains every seed of one method in one sweep-engine program (resuming with ``--resume``)."""
  task_names = splits["train"].task_names

  def on_epoch(seed: int, val: dict) -> None:
    _print_epoch(method, seed, args.epochs, task_names)(val)

  results = run_seeds(
    _run_config(args, method, 0, rate),
    splits,
    range(args.seeds),
    checkpoint=_checkpoint_path(args, method),
    progress=not args.no_progress,
    on_epoch=on_epoch,
  )
  for result in results:
    _print_run_end(result)
  return results


def engine_for(args) -> str:
  """The engine that trains: ``--engine``, or the loop where the sweep engine cannot run the
  options (said in a one-line note on stderr)."""
  if args.engine == "sweep" and args.sparse_embeddings:
    print(
      "note: the sweep engine takes dense embedding gradients only, so --sparse-embeddings "
      "trains each seed in its own loop (--engine loop)",
      file=sys.stderr,
    )
    return "loop"
  return args.engine


def _train_method(args, splits, method: str, rate: float, engine: str) -> list[dict]:
  if engine == "sweep":
    return _run_seeds(args, splits, method, rate)
  return [_run_one(args, splits, method, seed, rate) for seed in range(args.seeds)]


def _write_report(args, results, task_names, fingerprint, seconds: float) -> list[dict]:
  """Prints the table and writes results.json, table.txt and curves.png; returns divergences."""
  rows = summarise(results, task_names)
  table = format_table(rows, task_names)
  print(f"\ntest metrics of the best validation epoch, over {args.seeds} seed(s):\n{table}")
  diverged = [
    {"method": r["config"]["method"], "seed": r["config"]["seed"], **r["diverged"]}
    for r in results
    if r["diverged"]
  ]
  report = {
    "command": " ".join(["pub-optax"] + sys.argv[1:]),
    "arguments": vars(args),
    "machine": {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
    },
    "data": fingerprint,
    "seconds": seconds,
    "diverged": diverged,
    "summary": rows,
    "runs": results,
  }
  atomic_write_json(os.path.join(args.out, "results.json"), report)
  atomic_write_bytes(os.path.join(args.out, "table.txt"), (table + "\n").encode())
  message = plot(results, os.path.join(args.out, "curves.png"), task_names, args.data)
  print(
    f"\nwrote {args.out}/results.json, {args.out}/table.txt"
    + (f"; {message}" if message else f", {args.out}/curves.png")
  )
  return diverged


def train_command(args, methods: Sequence[str], rates: dict[str, float]) -> int:
  """Runs ``pub-optax train`` with validated options; returns the exit status.

  Returns:
    0, or 1 when a run diverged (its results are still written).

  Raises:
    DataError, FileNotFoundError: unusable data files.
    CheckpointError: a checkpoint that cannot be resumed.
  """
  t0 = time.time()
  splits, fingerprint = _prepare(args, methods, rates)
  print(_describe_data(args, splits))
  print(f"model {args.model} ({args.preset}), devices {jax.devices()}", flush=True)
  engine = engine_for(args)
  results = [r for m in methods for r in _train_method(args, splits, m, rates[m], engine)]
  task_names = splits["train"].task_names
  diverged = _write_report(args, results, task_names, fingerprint, time.time() - t0)
  print(f"total {time.time() - t0:.0f} s")
  if diverged:
    names = ", ".join(f"{d['method']} seed {d['seed']} at epoch {d['epoch']}" for d in diverged)
    print(
      f"pub-optax: {len(diverged)} run(s) diverged ({names}); try a smaller --lr",
      file=sys.stderr,
    )
    return 1
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``pub-optax``; returns the exit status.

  A value argparse cannot convert (``--epochs -1``) exits through argparse with status 2;
  every other unusable option returns 2 after a usage line and one error line.

  Exit status: 0 success; 1 some run diverged (results still written); 2 bad options,
  unusable data or checkpoints (one line on stderr).
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command == "methods":
    for name, info in METHODS.items():
      print(f"{name:14s} {info.description}")
    return 0
  try:
    methods, rates = validate(args)
  except UsageError as err:
    parser.print_usage(sys.stderr)
    print(f"pub-optax: error: {err}", file=sys.stderr)
    return 2
  try:
    return train_command(args, methods, rates)
  except (UsageError, DataError, CheckpointError, FileNotFoundError) as err:
    print(f"pub-optax: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
