"""The study benchmark's quick mode: it runs, and its JSON is complete and internally consistent."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "study.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("study")
  out, runs = tmp / "study.json", tmp / "runs.jsonl"
  cmd = [sys.executable, SCRIPT, "--quick", "--json", str(out), "--runs", str(runs)]
  cmd += ["--pairs", "pub:equal"]
  subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
  with open(out, encoding="utf-8") as f:
    result = json.load(f)
  return result, runs, cmd


def test_structure(quick):
  result, _, _ = quick
  for key in ("command", "machine", "config", "settings", "summary", "wall_s", "power"):
    assert key in result
  for package in ("jax", "jaxlib", "optax", "flax", "numpy"):
    assert result["machine"]["versions"][package]
  assert result["config"]["seeds"] == 2 and len(result["config"]["lrs"]) == 2
  settings = result["summary"]["settings"]
  assert len(settings) == 1
  block = next(iter(settings.values()))
  data = block["data"]
  for task in ("ctr", "ctcvr", "mean"):
    assert 0.5 < data["oracle_test_auc"][task] <= 1.0
  assert set(block["methods"]) == {"equal", "pub"}
  for method, row in block["methods"].items():
    assert row["tuned_lr"] in [float(r) for r in row["val_by_rate"]]
    assert isinstance(row["interior"], bool)
    assert row["seeds"] == [0, 1]
    assert len(row["weights_mean"]) == 2
    for key in ("ctr_auc", "ctcvr_auc", "mean_auc"):
      assert math.isfinite(row["test"][key]["mean"])
      gap = data["oracle_test_auc"][key[: -len("_auc")] if key != "mean_auc" else "mean"]
      assert row["gap_to_oracle"][key] == pytest.approx(gap - row["test"][key]["mean"])
    for key in ("ctr_auc", "ctcvr_auc"):
      assert 0 < row["hanley_mcneil_se"][key] < 0.1
    assert (method == "equal") == (not row["delta_vs_equal"])


def test_intervals_consistent(quick):
  result, _, _ = quick
  block = next(iter(result["summary"]["settings"].values()))
  pub, equal = block["methods"]["pub"], block["methods"]["equal"]
  for key, d in pub["delta_vs_equal"].items():
    assert d["n"] == 2 and d["dof"] == 1
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert d["half_width"] == pytest.approx((d["ci_high"] - d["ci_low"]) / 2)
    assert math.isfinite(d["mde"]) and d["mde"] > d["half_width"] > 0
    # Paired means: the difference of the two methods' means over the same seeds.
    assert d["mean"] == pytest.approx(
      pub["test"][key]["mean"] - equal["test"][key]["mean"], abs=1e-6
    )
  pooled = result["summary"]["pooled"]["pub"]["mean_auc"]
  single = pub["delta_vs_equal"]["mean_auc"]
  # One setting: pooling changes nothing.
  for key in ("mean", "ci_low", "ci_high", "mde"):
    assert pooled[key] == pytest.approx(single[key])


def test_runs_file_resumes(quick):
  result, runs, cmd = quick
  with open(runs, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  assert len(records) == result["sweeps_run"] >= 2
  for record in records:
    assert len(record["members"]) == 2 * len(record["learning_rates"])
    assert record["wall_s"] > 0
  # A second run reads every sweep from the runs file and reports the same numbers.
  again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert again.returncode == 0
  with open(cmd[cmd.index("--json") + 1], encoding="utf-8") as f:
    second = json.load(f)
  assert second["sweeps_run"] == 0
  assert second["summary"]["pooled"] == result["summary"]["pooled"]


def test_a_pair_with_equal_gives_the_pooled_differences_against_equal(quick):
  result, _, _ = quick
  pair, pooled = result["pairs"]["pub vs equal"], result["summary"]["pooled"]["pub"]
  for key in ("ctr_auc", "ctcvr_auc", "mean_auc"):
    for stat in ("mean", "half_width", "n"):
      assert pair[key][stat] == pytest.approx(pooled[key][stat], nan_ok=True), (key, stat)


def test_a_pair_naming_a_method_not_studied_is_refused():
  cmd = [sys.executable, SCRIPT, "--quick", "--methods", "pub", "--pairs", "pub:famo"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode != 0 and "--pairs: 'pub:famo' must be A:B" in out.stderr
