"""A powered study of PUB and its variants against tuned equal weighting on generated ranking data.

Each (setting, method) is trained by one :func:`pub_optax.ranking.sweep.sweep`: every seed × every
learning rate of a grid in one jitted program. Protocol:

* **Data** — generated AliExpress-schema splits (``generate_splits``) with raised click and
  conversion rates, so that validation and test each hold thousands of positives of the rarer task
  (CTCVR), and embedding tables capped at ``max_cardinality`` ids. The ground-truth probabilities
  of the test rows give the Bayes (oracle) AUC, the ceiling of any model.
* **Tuning** — the learning rate with the best mean validation mean-AUC over seeds (each member
  at its best validation epoch). If it is at an edge of the grid, the grid is extended one step
  (the grid's ratio) past that edge by another sweep over the same seeds, until the choice is
  interior or ``--max-extensions`` steps were added on that side; whether the final choice is
  interior is recorded.
* **Comparison** — test metrics at each method's tuned rate, paired by seed with equal weighting's
  members at equal's tuned rate (same seed: same initialisation and batch order). Per task and for
  the mean over tasks: the mean paired difference, its 95 % t-interval and the minimum detectable
  effect (MDE) at 80 % power of a two-sided 5 % paired t-test, ``(t_0.975 + t_0.80) · sd / √n``.
  Pooled over settings: the mean of the per-setting mean differences (each setting weighted
  equally), its standard error ``√(Σ sd_i² / n_i) / G`` and ``Σ (n_i − 1)`` degrees of freedom.
* **Split sampling error** — the Hanley–McNeil standard error of one AUC on the test split
  (``A``, positives ``n1``, negatives ``n0``), the error a single test split of this size adds to
  an AUC; it is common to every method (the same split), so it mostly cancels in paired
  differences, whereas the seed spread does not.

Every finished sweep is appended to ``--runs`` (JSON lines) with its wall time; sweeps already
there (same setting, method, seeds, rates and training settings) are not run again, so an
interrupted study continues. ``--budget-s`` stops starting new sweeps after that much wall time;
methods are run in the order given (all settings of a method before the next method), so a cut
removes the last methods.

Usage (from the repository root, package installed)::

  python benchmarks/study.py --quick --json /tmp/study.json
  nice -n 5 python benchmarks/study.py --runs benchmarks/results/study_cpu_runs.jsonl \\
      --json benchmarks/results/study_cpu.json --md benchmarks/results/study_cpu.md
"""

from __future__ import annotations

import argparse
import dataclasses
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
  load_runs,
  machine_info,
  report_command,
  write_report,
)

DEFAULT_METHODS = (
  "equal",
  "pub",
  "pub_fresh",
  "pub_rms_convex_state",
  "pub_adatask",
  "nash_mtl",
  "mgda",
  "famo",
  "pub_rms",
)
PACKAGES = ("jax", "jaxlib", "optax", "flax", "numpy", "scipy")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One generated data set: its ground truth, sizes and rates."""

  name: str
  conflict: float
  click_rate: float
  conversion_rate: float
  n_train: int
  n_val: int
  n_test: int
  data_seed: int = 0
  max_cardinality: int = 10_000


def default_settings(n_train: int, n_eval: int, n_eval_imbalanced: int) -> list[Setting]:
  """Conflict 0.2 and 0.8 (CTCVR 6 % of rows), and an imbalanced regime (clicks 40 %, CTCVR 2 %)."""
  return [
    Setting("conflict 0.2", 0.2, 0.2, 0.3, n_train, n_eval, n_eval),
    Setting("conflict 0.8", 0.8, 0.2, 0.3, n_train, n_eval, n_eval),
    Setting(
      "imbalanced (conflict 0.5)", 0.5, 0.4, 0.05, n_train, n_eval_imbalanced, n_eval_imbalanced
    ),
  ]


# ----------------------------------------------------------------------------- statistics


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
  """Hanley & McNeil (1982) standard error of an AUC from ``n_pos`` positives, ``n_neg`` negatives."""
  a = float(auc)
  q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
  var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
  return math.sqrt(max(var, 0.0))


def _interval(mean: float, se: float, dof: int) -> dict:
  from scipy import stats  # pylint: disable=import-outside-toplevel

  if dof < 1 or not np.isfinite(se):
    nan = float("nan")
    return dict(mean=mean, se=se, dof=dof, ci_low=nan, ci_high=nan, half_width=nan, mde=nan, p=nan)
  t975, t80 = float(stats.t.ppf(0.975, dof)), float(stats.t.ppf(0.80, dof))
  p = float(2 * stats.t.sf(abs(mean) / se, dof)) if se > 0 else float("nan")
  return dict(
    mean=mean,
    se=se,
    dof=dof,
    ci_low=mean - t975 * se,
    ci_high=mean + t975 * se,
    half_width=t975 * se,
    mde=(t975 + t80) * se,
    p=p,
  )


def paired_stats(diffs) -> dict:
  """Mean, 95 % t-interval, p and MDE (80 % power, two-sided 5 %) of paired differences."""
  d = np.asarray(diffs, float)
  d = d[np.isfinite(d)]
  n = len(d)
  if n < 2:
    out = _interval(float(d.mean()) if n else float("nan"), float("nan"), 0)
  else:
    out = _interval(float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), n - 1)
  out.update(n=n, sd=float(d.std(ddof=1)) if n > 1 else float("nan"))
  return out


def pooled_stats(per_setting: list[dict]) -> dict:
  """Equal-weight mean of per-setting paired means; SE ``√(Σ se_i²)/G``; ``Σ(n_i−1)`` dof."""
  rows = [s for s in per_setting if s["n"] >= 2 and np.isfinite(s["se"])]
  if not rows:
    return {**_interval(float("nan"), float("nan"), 0), "n": 0, "settings": 0}
  g = len(rows)
  mean = float(np.mean([s["mean"] for s in rows]))
  se = math.sqrt(sum(s["se"] ** 2 for s in rows)) / g
  out = _interval(mean, se, sum(s["n"] - 1 for s in rows))
  out.update(n=sum(s["n"] for s in rows), settings=g)
  return out


def seeds_needed(sd: float, n_settings: int, half_width: float, seeds_now: int) -> int | None:
  """Seeds per setting for a pooled 95 % half-width ≤ ``half_width``, from the measured ``sd``."""
  from scipy import stats  # pylint: disable=import-outside-toplevel

  if not np.isfinite(sd) or sd <= 0:
    return None
  for s in range(2, 100_000):
    dof = n_settings * (s - 1)
    if stats.t.ppf(0.975, dof) * sd / math.sqrt(n_settings * s) <= half_width:
      return max(s, 2)
  return None


# ----------------------------------------------------------------------------- data and sweeps


def _load_setting(setting: Setting, quick: bool):
  from pub_optax.ranking.data import generate_splits  # pylint: disable=import-outside-toplevel
  from pub_optax.ranking.metrics import auc  # pylint: disable=import-outside-toplevel

  pairs = generate_splits(
    setting.n_train,
    setting.n_val,
    setting.n_test,
    setting.data_seed,
    conflict=setting.conflict,
    return_truth=True,
    click_rate=setting.click_rate,
    conversion_rate=setting.conversion_rate,
    max_cardinality=setting.max_cardinality,
  )
  splits = {k: d for k, (d, _) in pairs.items()}
  test, truth = pairs["test"]
  names = list(test.task_names)
  info = {"positives": {}, "oracle_test_auc": {}, "hanley_mcneil_se_at_oracle": {}}
  for split_name, (data, _) in pairs.items():
    info["positives"][split_name] = {t: int(data.labels[:, i].sum()) for i, t in enumerate(names)}
  for i, t in enumerate(names):
    a = float(auc(test.labels[:, i], truth.probabilities[:, i]))
    n_pos = int(test.labels[:, i].sum())
    info["oracle_test_auc"][t] = a
    info["hanley_mcneil_se_at_oracle"][t] = hanley_mcneil_se(a, n_pos, len(test) - n_pos)
  info["oracle_test_auc"]["mean"] = float(np.mean([info["oracle_test_auc"][t] for t in names]))
  info["tasks"] = names
  info["n_test"] = len(test)
  return splits, info


def _sweep_key(setting: Setting, method: str, seeds, rates, train: dict) -> str:
  return json.dumps(
    dict(
      setting=dataclasses.asdict(setting),
      method=method,
      seeds=list(seeds),
      learning_rates=[float(r) for r in rates],
      train=train,
    ),
    sort_keys=True,
  )


class Runner:
  """Runs (or reuses from the runs file) the sweeps of one study."""

  def __init__(self, args, train: dict, model_kwargs: dict | None):
    self.args, self.train, self.model_kwargs = args, train, model_kwargs
    self.stored = load_runs(args.runs)
    self.start = time.perf_counter()
    self.cut: list[str] = []
    self.n_run = 0

  def out_of_budget(self) -> bool:
    budget = self.args.budget_s
    return budget is not None and time.perf_counter() - self.start > budget

  def members(self, setting: Setting, splits, method: str, rates) -> list[dict] | None:
    """Every member of ``method`` × seeds × ``rates`` (stored, or trained now); None if cut."""
    from pub_optax.ranking.sweep import sweep  # pylint: disable=import-outside-toplevel

    seeds = tuple(range(self.args.seeds))
    key = _sweep_key(setting, method, seeds, rates, self.train)
    if key in self.stored:
      return self.stored[key]["members"]
    if self.out_of_budget():
      self.cut.append(f"{setting.name} / {method} / rates {list(rates)}")
      return None
    t0 = time.perf_counter()
    results = sweep(
      self.args.model,
      method,
      splits,
      seeds=seeds,
      learning_rates=tuple(rates),
      epochs=self.train["epochs"],
      batch_size=self.train["batch_size"],
      patience=self.train["patience"],
      preset="small",
      model_kwargs=self.model_kwargs,
    )
    wall = time.perf_counter() - t0
    members = [
      dict(
        seed=r["config"]["seed"],
        learning_rate=r["config"]["learning_rate"],
        test=r["test"],
        best_val_mean_auc=r["best_val_mean_auc"],
        best_epoch=r["best_epoch"],
        epochs_run=r["epochs_run"],
        weights=r["weights"],
        diverged=r["diverged"],
      )
      for r in results
    ]
    record = dict(
      key=key,
      setting=setting.name,
      method=method,
      learning_rates=[float(r) for r in rates],
      seeds=list(seeds),
      wall_s=wall,
      members=members,
    )
    self.stored[key] = record
    self.n_run += 1
    append_run(self.args.runs, record)
    print(
      f"  {setting.name:28s} {method:22s} rates {[f'{r:.0e}' for r in rates]} "
      f"{wall:6.1f} s (elapsed {time.perf_counter() - self.start:6.0f} s)",
      flush=True,
    )
    return members

  def wall_of(self, setting: Setting, method: str, rates) -> float:
    key = _sweep_key(setting, method, tuple(range(self.args.seeds)), rates, self.train)
    return self.stored[key]["wall_s"] if key in self.stored else float("nan")


def _mean_val_by_rate(members: list[dict]) -> dict[float, float]:
  by_rate: dict[float, list] = {}
  for m in members:
    v = m["best_val_mean_auc"]
    by_rate.setdefault(float(m["learning_rate"]), []).append(
      v if (v is not None and np.isfinite(v)) else -np.inf
    )
  return {r: float(np.mean(v)) for r, v in sorted(by_rate.items())}


def grid_ratio(grid) -> float:
  """The step of a sorted rate grid (its top two rates' ratio), 3 for a single rate."""
  return grid[-1] / grid[-2] if len(grid) > 1 else 3.0


def choose_rate(val: dict, extended: dict, max_extensions: int, ratio: float):
  """The tuning rule: the rate with the best validation score in ``val`` (rate -> score),
  whether it is interior, and the ``(side, rate)`` one grid step past the edge it sits on —
  None when it is interior or that side was already extended ``max_extensions`` times."""
  rates = sorted(val)
  best = max(rates, key=lambda r: val[r])
  interior = rates[0] < best < rates[-1]
  side = "high" if best == rates[-1] else "low"
  if interior or extended[side] >= max_extensions:
    return best, interior, None
  return best, interior, (side, rates[-1] * ratio if side == "high" else rates[0] / ratio)


def tune(runner: Runner, setting: Setting, splits, method: str) -> dict | None:
  """Sweeps the grid, extends it past an edge choice, returns the members and the choice."""
  args = runner.args
  grid = sorted(float(r) for r in args.lrs)
  ratio = grid_ratio(grid)
  members = runner.members(setting, splits, method, grid)
  if members is None:
    return None
  sweeps = [dict(rates=grid, wall_s=runner.wall_of(setting, method, grid))]
  extended = {"low": 0, "high": 0}
  while True:
    val = _mean_val_by_rate(members)
    best, interior, extension = choose_rate(val, extended, args.max_extensions, ratio)
    if extension is None:
      break
    side, rate = extension
    new = [rate]
    more = runner.members(setting, splits, method, new)
    if more is None:
      break
    extended[side] += 1
    sweeps.append(dict(rates=new, wall_s=runner.wall_of(setting, method, new)))
    members = members + more
  return dict(
    members=members,
    val_by_rate=val,
    tuned_lr=best,
    interior=bool(interior),
    extended=extended,
    sweeps=sweeps,
  )


# ----------------------------------------------------------------------------- summary


def _at_rate(members: list[dict], rate: float) -> dict[int, dict]:
  return {int(m["seed"]): m for m in members if math.isclose(m["learning_rate"], rate)}


def _paired(a: dict, b: dict, seeds, key: str) -> dict:
  """:func:`paired_stats` of ``a``'s test ``key`` minus ``b``'s (members by seed) over ``seeds``."""
  return paired_stats([a[s]["test"][key] - b[s]["test"][key] for s in seeds])


def summarise(settings_info: dict, tuned: dict, methods: list[str]) -> dict:
  """Per-setting and pooled tables of test AUC and paired differences against equal."""
  out: dict = {"settings": {}, "pooled": {}}
  keys = None
  for name, info in settings_info.items():
    tasks = info["tasks"]
    keys = [f"{t}_auc" for t in tasks] + ["mean_auc"]
    block: dict = {"data": info, "methods": {}}
    eq = tuned.get((name, "equal"))
    eq_members = _at_rate(eq["members"], eq["tuned_lr"]) if eq else {}
    for method in methods:
      t = tuned.get((name, method))
      if t is None:
        continue
      chosen = _at_rate(t["members"], t["tuned_lr"])
      seeds = sorted(chosen)
      row: dict = dict(
        tuned_lr=t["tuned_lr"],
        interior=t["interior"],
        extended=t["extended"],
        val_by_rate=t["val_by_rate"],
        sweeps=t["sweeps"],
        wall_s=float(np.nansum([s["wall_s"] for s in t["sweeps"]])),
        seeds=seeds,
        diverged_members=sum(1 for m in t["members"] if m["diverged"]),
        diverged_at_tuned=sum(1 for s in seeds if chosen[s]["diverged"]),
        best_epoch=[chosen[s]["best_epoch"] for s in seeds],
        test={},
        delta_vs_equal={},
        delta_at_equal_lr={},
        gap_to_oracle={},
      )
      weights = np.array([chosen[s]["weights"] for s in seeds], float)
      row["weights_mean"] = np.nanmean(weights, axis=0).tolist()
      row["weights_range"] = [
        np.nanmin(weights, axis=0).tolist(),
        np.nanmax(weights, axis=0).tolist(),
      ]
      for k in keys:
        vals = np.array([chosen[s]["test"][k] for s in seeds], float)
        row["test"][k] = dict(mean=float(np.nanmean(vals)), std=float(np.nanstd(vals, ddof=1)))
        task = k[: -len("_auc")] if k != "mean_auc" else "mean"
        row["gap_to_oracle"][k] = info["oracle_test_auc"][task] - row["test"][k]["mean"]
        if method != "equal" and eq_members:
          paired = [s for s in seeds if s in eq_members]
          row["delta_vs_equal"][k] = _paired(chosen, eq_members, paired, k)
          # The same comparison with this method at equal's tuned rate (if it was swept there).
          same = _at_rate(t["members"], eq["tuned_lr"])
          if same:
            row["delta_at_equal_lr"][k] = _paired(
              same, eq_members, [s for s in paired if s in same], k
            )
      # Hanley–McNeil error of one test split at this method's mean AUC.
      n_test = info["n_test"]
      row["hanley_mcneil_se"] = {
        f"{t}_auc": hanley_mcneil_se(
          row["test"][f"{t}_auc"]["mean"],
          info["positives"]["test"][t],
          n_test - info["positives"]["test"][t],
        )
        for t in tasks
        if np.isfinite(row["test"][f"{t}_auc"]["mean"])
      }
      block["methods"][method] = row
    out["settings"][name] = block
  for method in methods:
    if method == "equal" or keys is None:
      continue
    pooled = {}
    for k in keys:
      per = [
        b["methods"][method]["delta_vs_equal"][k]
        for b in out["settings"].values()
        if method in b["methods"] and k in b["methods"][method]["delta_vs_equal"]
      ]
      if per:
        pooled[k] = pooled_stats(per)
        pooled[k]["settings_names"] = [
          n
          for n, b in out["settings"].items()
          if method in b["methods"] and k in b["methods"][method]["delta_vs_equal"]
        ]
      same = [
        b["methods"][method]["delta_at_equal_lr"][k]
        for b in out["settings"].values()
        if method in b["methods"] and k in b["methods"][method]["delta_at_equal_lr"]
      ]
      if same and len(same) == len(per):
        pooled.setdefault("at_equal_lr", {})[k] = pooled_stats(same)
    if pooled:
      pooled["all_interior"] = all(
        b["methods"][method]["interior"] for b in out["settings"].values() if method in b["methods"]
      )
      out["pooled"][method] = pooled
  return out


def compare_pairs(settings_info: dict, tuned: dict, pairs: list[tuple[str, str]]) -> dict:
  """Pooled paired differences of method ``a`` against method ``b``, both at their tuned rates.

  For a PUB variant against its inner optimizer alone (``pub_clippy`` against ``clippy_adam``),
  this separates what the balancing adds from what the inner optimizer brings.
  """
  out = {}
  for a, b in pairs:
    per: dict[str, list] = {}
    for name, info in settings_info.items():
      ta, tb = tuned.get((name, a)), tuned.get((name, b))
      if ta is None or tb is None:
        continue
      ma, mb = _at_rate(ta["members"], ta["tuned_lr"]), _at_rate(tb["members"], tb["tuned_lr"])
      seeds = sorted(set(ma) & set(mb))
      for k in [f"{t}_auc" for t in info["tasks"]] + ["mean_auc"]:
        per.setdefault(k, []).append(_paired(ma, mb, seeds, k))
    if per:
      out[f"{a} vs {b}"] = {k: pooled_stats(v) for k, v in per.items()}
  return out


def num(x, fmt="{:.4f}") -> str:
  """``x`` in ``fmt``; a dash for a missing or non-finite value."""
  return "—" if x is None or not np.isfinite(x) else fmt.format(x)


def ci_text(d: dict | None) -> str:
  """A paired difference as ``mean [ci_low, ci_high]``, signed; a dash without one."""
  if not d:
    return "—"
  return (
    f"{num(d['mean'], '{:+.4f}')} [{num(d['ci_low'], '{:+.4f}')}, {num(d['ci_high'], '{:+.4f}')}]"
  )


def _pooled_row(label: str, pooled: dict) -> str:
  """The cells of one pooled comparison, from the label to the CTCVR difference."""
  mm = pooled["mean_auc"]
  return (
    f"| {label} | {mm['settings']} | {mm['n']} | {num(mm['mean'], '{:+.4f}')} | "
    f"[{num(mm['ci_low'], '{:+.4f}')}, {num(mm['ci_high'], '{:+.4f}')}] | {num(mm['half_width'])} | "
    f"{num(mm['mde'])} | {num(mm['p'], '{:.3f}')} | "
    f"{ci_text(pooled.get('ctr_auc'))} | {ci_text(pooled.get('ctcvr_auc'))} |"
  )


def markdown(result: dict) -> str:
  """A readable report of one study (``result`` as written to ``--json``)."""
  s = result["summary"]
  cfg = result["config"]
  m = result["machine"]
  v = m["versions"]
  lines = [
    "# A powered study: PUB and its variants against tuned equal weighting",
    "",
    f"Command: `{result['command']}`",
    "",
    f"Versions: jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, optax {v.get('optax')}, "
    f"flax {v.get('flax')}, numpy {v.get('numpy')}, scipy {v.get('scipy')}, Python {m['python']}. "
    f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, load average at start "
    f"{result['load_average_start']}, at end {result['load_average_end']} (shared with other jobs). "
    f"Date {m['date']}. Wall time of this command {result['wall_s']:.0f} s "
    f"({result['sweeps_run']} sweeps run, the rest read from the runs file); the sweeps reported "
    f"took {result['sweeps_wall_s']:.0f} s in all.",
    "",
    f"Model `{cfg['model']}`, preset small, batch {cfg['batch_size']}, up to {cfg['epochs']} epochs, "
    f"patience {cfg['patience']}, Adam-based methods at their registry defaults, no weight decay; "
    f"seeds 0..{cfg['seeds'] - 1} ({cfg['seeds']}); initial learning-rate grid "
    f"{cfg['lrs']} (extended by ×/÷ the grid ratio past an edge choice, at most "
    f"{cfg['max_extensions']} step(s) per side).",
    "",
  ]
  if result.get("note"):
    lines += [result["note"], ""]
  lines += [
    f"## Data (generated AliExpress-schema rows, tables capped at {cfg['max_cardinality']:,} ids)",
    "",
  ]
  lines += [
    "| setting | conflict | click rate | conv./click | train | val | test | val positives (ctr/ctcvr) "
    "| test positives (ctr/ctcvr) | oracle test AUC ctr / ctcvr / mean | Hanley–McNeil SE at oracle "
    "ctr / ctcvr |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for st in result["settings"]:
    name = st["name"]
    if name not in s["settings"]:
      continue
    d = s["settings"][name]["data"]
    pv, pt = d["positives"]["val"], d["positives"]["test"]
    o, hm = d["oracle_test_auc"], d["hanley_mcneil_se_at_oracle"]
    lines.append(
      f"| {name} | {st['conflict']} | {st['click_rate']} | {st['conversion_rate']} | "
      f"{st['n_train']:,} | {st['n_val']:,} | {st['n_test']:,} | {pv['ctr']:,} / {pv['ctcvr']:,} | "
      f"{pt['ctr']:,} / {pt['ctcvr']:,} | {o['ctr']:.4f} / {o['ctcvr']:.4f} / {o['mean']:.4f} | "
      f"{hm['ctr']:.4f} / {hm['ctcvr']:.4f} |"
    )
  lines += [""]
  # Headline: pooled.
  lines += [
    "## Pooled over settings: mean test AUC (mean of tasks), paired difference against equal",
    "",
    "Δ = mean over settings of the per-setting mean paired (same seed) difference; 95 % CI and "
    "p from the t distribution with Σ(n_i − 1) degrees of freedom; MDE = smallest true Δ a "
    "two-sided 5 % test detects with 80 % power at this standard error.",
    "",
    "| method | settings | pairs | Δ mean AUC | 95 % CI | ± half-width | MDE | p "
    "| Δ ctr [95 % CI] | Δ ctcvr [95 % CI] | tuned rate interior in all "
    "| Δ mean AUC at equal's rate [95 % CI] |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for method, p in s["pooled"].items():
    lines.append(
      _pooled_row(method, p) + f" {'yes' if p['all_interior'] else 'no'} | "
      f"{ci_text(p.get('at_equal_lr', {}).get('mean_auc'))} |"
    )
  lines += [""]
  if result.get("pairs"):
    lines += [
      "## Pooled over settings: paired differences between two methods",
      "",
      "Each method at its own tuned rate, same seeds; pooled as above.",
      "",
      "| comparison | settings | pairs | Δ mean AUC | 95 % CI | ± half-width | MDE | p "
      "| Δ ctr [95 % CI] | Δ ctcvr [95 % CI] |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_pooled_row(label, p) for label, p in result["pairs"].items()] + [""]
  for name, block in s["settings"].items():
    d = block["data"]
    lines += [
      f"## {name}",
      "",
      "Test AUC mean ± std over seeds at the tuned rate; Δ = paired difference against equal "
      "(mean [95 % CI], MDE); Δ at equal's lr = the same with this method at equal's tuned rate "
      "(shows how much of Δ comes from the rate chosen); gap = oracle AUC − method's mean AUC; HM SE = Hanley–McNeil standard "
      "error of one test split at the method's AUC (ctr / ctcvr); weights = mean over seeds of the "
      "normalised task weights (ctr, ctcvr) of each member's last update.",
      "",
      "| method | tuned lr | interior | ctr | ctcvr | mean | Δ mean [95 % CI] | MDE | Δ ctr | "
      "Δ ctcvr | Δ mean at equal's lr [95 % CI] | gap to oracle | HM SE | weights | best epoch | "
      "diverged | wall s | val mean AUC by lr |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in block["methods"].items():
      t = r["test"]
      dv = r["delta_vs_equal"]
      dm = dv.get("mean_auc")
      w = np.asarray(r["weights_mean"], float)
      w = w / w.sum() if np.all(np.isfinite(w)) and w.sum() > 0 else w
      lines.append(
        f"| {method} | {r['tuned_lr']:.2g} | {'yes' if r['interior'] else 'no'} | "
        f"{t['ctr_auc']['mean']:.4f} ± {t['ctr_auc']['std']:.4f} | "
        f"{t['ctcvr_auc']['mean']:.4f} ± {t['ctcvr_auc']['std']:.4f} | "
        f"**{t['mean_auc']['mean']:.4f}** ± {t['mean_auc']['std']:.4f} | "
        + (
          f"{dm['mean']:+.4f} [{num(dm['ci_low'], '{:+.4f}')}, {num(dm['ci_high'], '{:+.4f}')}] | "
          f"{num(dm['mde'])} | {dv['ctr_auc']['mean']:+.4f} | {dv['ctcvr_auc']['mean']:+.4f} | "
          if dm
          else "— | — | — | — | "
        )
        + f"{ci_text(r['delta_at_equal_lr'].get('mean_auc'))} | "
        + f"{r['gap_to_oracle']['mean_auc']:.4f} | "
        f"{r['hanley_mcneil_se'].get('ctr_auc', float('nan')):.4f} / "
        f"{r['hanley_mcneil_se'].get('ctcvr_auc', float('nan')):.4f} | "
        f"{' / '.join(f'{x:.3f}' for x in w)} | "
        f"{min(r['best_epoch'])}–{max(r['best_epoch'])} | {r['diverged_members']} | {r['wall_s']:.0f} | "
        + " ".join(f"{lr:.2g}:{val:.4f}" for lr, val in r["val_by_rate"].items())
        + " |"
      )
    lines += [""]
  if result.get("power"):
    lines += ["## Power", "", result["power"], ""]
  if result.get("cut"):
    lines += ["## Not run (wall-time budget)", ""] + [f"- {c}" for c in result["cut"]] + [""]
  if result.get("reading"):
    lines += ["## Reading", "", result["reading"], ""]
  return "\n".join(lines)


def power_text(summary: dict, seeds: int, target: float) -> str:
  """The achieved pooled half-widths, and the seeds a ±``target`` half-width needs."""
  out = []
  for method, p in summary["pooled"].items():
    mm = p["mean_auc"]
    per = [
      b["methods"][method]["delta_vs_equal"]["mean_auc"]["sd"]
      for b in summary["settings"].values()
      if method in b["methods"] and "mean_auc" in b["methods"][method]["delta_vs_equal"]
    ]
    sd = float(np.sqrt(np.mean(np.square(per)))) if per else float("nan")
    need = seeds_needed(sd, mm["settings"], target, seeds)
    out.append(
      f"- {method}: pooled half-width ±{num(mm['half_width'])} over {mm['n']} pairs "
      f"({mm['settings']} settings × {seeds} seeds); measured paired-difference sd (RMS over "
      f"settings) {num(sd)}; ±{target} would need "
      + (f"{need} seeds per setting at {mm['settings']} settings." if need else "— (no estimate).")
    )
  return "\n".join(out)


# ----------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--quick", action="store_true", help="tiny data and model, 2 seeds, 2 rates")
  p.add_argument("--methods", default=",".join(DEFAULT_METHODS[:6]))
  p.add_argument("--settings", default=None, help="comma-separated indices into the settings")
  p.add_argument("--model", default="mmoe")
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--lrs", default="3e-3,1e-2,3e-2")
  p.add_argument("--max-extensions", type=int, default=1)
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--patience", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=512)
  p.add_argument("--n-train", type=int, default=40_000)
  p.add_argument("--n-eval", type=int, default=40_000, help="val and test rows (balanced settings)")
  p.add_argument("--n-eval-imbalanced", type=int, default=100_000)
  p.add_argument("--max-cardinality", type=int, default=10_000)
  p.add_argument("--budget-s", type=float, default=None, help="start no sweep after this many s")
  p.add_argument("--target", type=float, default=0.003, help="target pooled 95 %% half-width")
  p.add_argument("--runs", default=None, help="JSON-lines file of finished sweeps (read, appended)")
  p.add_argument(
    "--pairs",
    default="",
    help="A:B,... also compare method A against method B (both in --methods), paired by seed",
  )
  add_report_options(p)
  return p


def main(argv=None) -> dict:
  args = _parser().parse_args(argv)
  command = report_command("study.py", argv)
  load_start = os.getloadavg()
  model_kwargs = None
  if args.quick:
    # Compilation dominates at the quick sizes, and --quick checks that the study runs and
    # reports consistently, not its numbers: XLA's optimisation passes are skipped.
    jax.config.update("jax_disable_most_optimizations", True)
    args.seeds, args.epochs, args.patience = 2, 1, 1
    if args.lrs == _parser().get_default("lrs"):
      args.lrs = "1e-2,3e-2"
    if args.methods == _parser().get_default("methods"):
      args.methods = "equal,pub"
    args.max_extensions = 0
    args.batch_size, args.max_cardinality = 256, 100
    settings = [Setting("quick conflict 0.2", 0.2, 0.3, 0.3, 1024, 1024, 1024, max_cardinality=100)]
    model_kwargs = dict(dropout=0.0, embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,))
  else:
    settings = default_settings(args.n_train, args.n_eval, args.n_eval_imbalanced)
    settings = [dataclasses.replace(s, max_cardinality=args.max_cardinality) for s in settings]
    if args.settings:
      settings = [settings[int(i)] for i in args.settings.split(",")]
  args.lrs = [float(x) for x in str(args.lrs).split(",")] if isinstance(args.lrs, str) else args.lrs
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  if "equal" not in methods:
    methods = ["equal"] + methods
  pairs = [tuple(x.split(":")) for x in args.pairs.split(",") if x.strip()]
  for pair in pairs:
    if len(pair) != 2 or not set(pair) <= set(methods):
      raise SystemExit(f"--pairs: {':'.join(pair)!r} must be A:B with both methods in --methods")
  train = dict(
    model=args.model,
    epochs=args.epochs,
    patience=args.patience,
    batch_size=args.batch_size,
    preset="small",
    model_kwargs=model_kwargs,
  )
  runner = Runner(args, train, model_kwargs)
  data, infos = {}, {}
  for st in settings:
    data[st.name], infos[st.name] = _load_setting(st, args.quick)
    pos = infos[st.name]["positives"]
    print(f"{st.name}: positives {pos}, oracle {infos[st.name]['oracle_test_auc']}", flush=True)
  tuned = {}
  for method in methods:
    for st in settings:
      t = tune(runner, st, data[st.name], method)
      if t is not None:
        tuned[(st.name, method)] = t
  summary = summarise(infos, tuned, methods)
  result = dict(
    command=command,
    machine=machine_info(PACKAGES),
    load_average_start=[round(x, 2) for x in load_start],
    load_average_end=[round(x, 2) for x in os.getloadavg()],
    wall_s=time.perf_counter() - runner.start,
    sweeps_run=runner.n_run,
    sweeps_wall_s=float(
      sum(s["wall_s"] for t in tuned.values() for s in t["sweeps"] if np.isfinite(s["wall_s"]))
    ),
    config=dict(
      model=args.model,
      seeds=args.seeds,
      lrs=args.lrs,
      max_extensions=args.max_extensions,
      epochs=args.epochs,
      patience=args.patience,
      batch_size=args.batch_size,
      max_cardinality=args.max_cardinality,
      methods=methods,
      quick=args.quick,
      model_kwargs=model_kwargs,
      target_half_width=args.target,
    ),
    settings=[dataclasses.asdict(s) for s in settings],
    summary=summary,
    pairs=compare_pairs(infos, tuned, pairs),
    cut=runner.cut,
    note=args.note,
    reading=args.reading,
  )
  result["power"] = power_text(summary, args.seeds, args.target)
  write_report(result, args.json, args.md, markdown)
  return result


if __name__ == "__main__":
  main()
