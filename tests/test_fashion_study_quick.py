"""The Multi-Fashion study's quick mode: it runs, its report agrees with its runs, and it resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "fashion_study.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from common import append_run, load_runs  # noqa: E402


def _study(tmp, name: str) -> dict:
  out = tmp / f"{name}.json"
  cmd = [sys.executable, SCRIPT, "--quick", "--json", str(out), "--runs", str(tmp / "runs.jsonl")]
  cmd += ["--cache", str(tmp / "cache")]
  subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
  return json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("fashion_study")
  first = _study(tmp, "first")
  return first, _study(tmp, "again"), load_runs(str(tmp / "runs.jsonl"))


def test_report_agrees_with_its_runs(quick):
  result, _, runs = quick
  rows = result["methods"]
  assert set(rows) == {"equal", "pub", "equal_Kx"}
  assert rows["equal_Kx"]["tuned_lr"] == pytest.approx(2 * rows["equal"]["tuned_lr"])
  by_seed = {(r["method"], r["learning_rate"], r["seed"]): r["test"]["mean"] for r in runs.values()}
  equal_lr, pub_lr = rows["equal"]["tuned_lr"], rows["pub"]["tuned_lr"]
  diffs = [by_seed["pub", pub_lr, s] - by_seed["equal", equal_lr, s] for s in (0, 1)]
  delta = rows["pub"]["delta_vs_equal"]["mean"]
  assert delta["mean"] == pytest.approx(np.mean(diffs)) and delta["n"] == 2
  assert delta["ci_low"] <= delta["mean"] <= delta["ci_high"]
  assert rows["pub"]["test"]["mean"]["mean"] == pytest.approx(
    np.mean([by_seed["pub", pub_lr, s] for s in (0, 1)])
  )
  assert not rows["equal"]["delta_vs_equal"]
  for row in rows.values():
    assert all(1 <= b <= e for b, e in zip(row["best_epoch"], row["epochs_run"]))
    assert sum(row["weights_mean"]) == pytest.approx(1.0, abs=0.05)
  assert result["runs_trained"] == len(runs) == 6


def test_resumes_from_its_runs_without_training(quick):
  first, again, _ = quick
  assert again["runs_trained"] == 0
  assert again["methods"] == first["methods"]


def test_runs_file_skips_only_a_cut_last_line(tmp_path):
  path = str(tmp_path / "runs.jsonl")
  append_run(path, {"key": "a", "x": 1})
  append_run(path, {"key": "b", "x": float("nan")})
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"key": "c", "x"')
  runs = load_runs(path)
  assert sorted(runs) == ["a", "b"] and np.isnan(runs["b"]["x"])
  with open(path, "a", encoding="utf-8") as f:
    f.write('\n{"key": "d"}\n')
  with pytest.raises(ValueError, match="line 3 is not JSON"):
    load_runs(path)


def test_appending_after_a_cut_line_replaces_it(tmp_path):
  path = str(tmp_path / "runs.jsonl")
  append_run(path, {"key": "a"})
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"key": "b", "x"')
  append_run(path, {"key": "c"})
  assert sorted(load_runs(path)) == ["a", "c"]
  with open(path, encoding="utf-8") as f:
    assert f.read() == '{"key": "a"}\n{"key": "c"}\n'
