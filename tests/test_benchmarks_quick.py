"""The benchmark scripts run in --quick mode and write complete JSON (no timing thresholds).

Each script runs in its own process, as a user would run it, from the repository root.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLVER = os.path.join(ROOT, "benchmarks", "solver.py")


def _run(script: str, tmp_path) -> dict:
  out = tmp_path / f"{script}.json"
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, os.path.join("benchmarks", f"{script}.py"), "--quick", "--json", str(out)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=400,
    check=False,
  )
  assert proc.returncode == 0, (
    f"{script}.py --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  )
  assert out.exists(), proc.stdout
  result = json.loads(out.read_text())
  assert result["benchmark"] == script
  assert result["config"]["quick"] is True
  assert result["machine"]["cpu_count"] >= 1 and result["machine"]["jax_devices"]
  assert result["wall_s"] > 0
  assert result["rows"], result
  return result


def _positive(row: dict, keys) -> None:
  for key in keys:
    assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (
      key,
      row,
    )


@pytest.mark.skipif(not os.path.exists(SOLVER), reason="benchmarks/solver.py not written yet")
def test_solver_quick(tmp_path):
  result = _run("solver", tmp_path)
  sizes = [row["K"] for row in result["rows"]]
  assert sizes == list(result["config"]["sizes"])
  for row in result["rows"]:
    _positive(row, ["newton_us", "batch_us", "ccp_ms", "speedup"])
    assert math.isfinite(row["err_f32"]) and row["err_f32"] >= 0
  assert set(result["summary"]) >= {"speed_goal_met", "agreement_goal_met", "min_speedup"}


def test_step_quick(tmp_path):
  result = _run("step", tmp_path)
  cfg = result["config"]
  assert [[r["embed_dim"], r["num_tasks"]] for r in result["rows"]] == [
    list(c) for c in cfg["configs"]
  ]
  for row in result["rows"]:
    _positive(
      row,
      [
        "params_m",
        "pub_over_adam",
        "pub_over_floor",
        "nash_over_adam",
        "floor_over_adam",
        "sparse_over_adam",
        "sparse_over_floor",
        "sparse_over_pub",
      ],
    )
    for method in ("adam", "pub", "floor", "nash", "pub_sparse", "floor_sparse"):
      _positive(row, [f"{method}_s", f"mem_{method}_mb", f"compile_{method}_s"])
      assert len(row["samples_s"][method]) == row["rounds"] >= 3
  assert set(result["summary"]) >= {
    "floor_goal_met",
    "adam_goal_met",
    "max_pub_over_floor",
    "pub_over_adam_k2",
    "max_sparse_over_floor",
    "sparse_over_adam_k2",
  }


def test_scaling_quick(tmp_path):
  result = _run("scaling", tmp_path)
  rows = result["rows"]
  assert [r["devices"] for r in rows] == [1, 2, 4, 8]  # forced host devices on CPU
  for row in rows:
    _positive(row, ["step_s", "rows_per_s", "speedup", "first_step_s"])
    assert row["rows_per_device"] * row["devices"] == result["config"]["batch_size"]
    assert row["max_rel_diff"] <= 1e-5, row  # every device count trained to the same parameters


def _run_plain(script: str, tmp_path) -> dict:
  """Runs a study script in --quick mode; returns its JSON (these scripts have their own layout)."""
  out = tmp_path / f"{script}.json"
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg")
  env.pop("XLA_FLAGS", None)
  args = [sys.executable, os.path.join("benchmarks", f"{script}.py"), "--quick", "--json", str(out)]
  proc = subprocess.run(
    args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, (
    f"{script}.py --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  )
  return json.loads(out.read_text())


def test_toy_quick(tmp_path):
  result = _run_plain("toy", tmp_path)
  assert result["config"]["quick"] is True
  for row in result["rows"]:
    assert len(row["final_losses"]) == 5 and all(
      math.isfinite(v) for pair in row["final_losses"] for v in pair
    )


def test_deviation_quick(tmp_path):
  result = _run_plain("deviation", tmp_path)
  assert result["results"], result.keys()


def test_diagnostics_quick(tmp_path):
  result = _run_plain("diagnostics", tmp_path)
  for row in result["toy"] + result["ranking"]:
    assert 0.0 <= row["history_share"]["median"] and -1.0 <= row["cos"]["median"] <= 1.0, row


def test_ranking_quick(tmp_path):
  result = _run_plain("ranking", tmp_path)
  text = json.dumps(result)
  assert "equal" in text and "pub" in text
  fashion = result["data"]["multi-fashion"]
  if os.path.isdir("/usr/share/datasets/fashion-mnist"):  # Debian's dataset-fashion-mnist
    assert fashion["train"] > 0
    assert any(r["setting"] == "multi-fashion" for r in result["summary"])
  else:  # --quick reports the missing data set instead of failing
    assert "Fashion-MNIST folder not found" in fashion["not_run"]


def test_ranking_runs_unchanged_on_aliexpress_csv_files(tmp_path):
  """The study reads a user's AliExpress directory (train.csv, test.csv) with --data aliexpress:DIR."""
  from pub_optax.ranking.data import generate_aliexpress, write_aliexpress_csv

  data_dir = tmp_path / "AliExpress_NL"
  data_dir.mkdir()
  write_aliexpress_csv(
    generate_aliexpress(1500, seed=1, stream=0, conversion_rate=0.3), data_dir / "train.csv"
  )
  write_aliexpress_csv(
    generate_aliexpress(500, seed=1, stream=2, conversion_rate=0.3), data_dir / "test.csv"
  )
  out = tmp_path / "ranking.json"
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg")
  env.pop("XLA_FLAGS", None)
  args = [
    sys.executable,
    os.path.join("benchmarks", "ranking.py"),
    "--quick",
    "--no-multi-fashion",
    "--data",
    f"aliexpress:{data_dir}",
    "--json",
    str(out),
  ]
  proc = subprocess.run(
    args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  result = json.loads(out.read_text())
  setting = f"aliexpress:{data_dir}"
  assert result["data"][setting]["test"] == 500
  assert result["data"][setting]["train"] + result["data"][setting]["val"] == 1500
  rows = {r["method"]: r for r in result["summary"]}
  assert set(rows) == {"equal", "pub_rms"}
  for row in rows.values():
    assert row["setting"] == setting and 0.0 <= row["mean"] <= 1.0


def test_sweep_quick(tmp_path):
  result = _run("sweep", tmp_path)
  cfg = result["config"]
  assert [(r["method"], r["members"]) for r in result["rows"]] == [
    (method, n_seeds * n_rates) for _, n_seeds, n_rates in cfg["grids"] for method in cfg["methods"]
  ]
  assert max(r["members"] for r in result["rows"]) <= 4
  for row in result["rows"]:
    _positive(
      row,
      [
        "engine_member_rows_per_s",
        "trainer_rows_per_s",
        "ratio",
        "ratio_with_eval",
        "engine_first_epoch_s",
        "trainer_first_epoch_s",
      ],
    )
    for side in ("engine", "trainer"):
      assert len(row["samples"][side]) == row["rounds"] >= 1
  assert [r["method"] for r in result["end_to_end"]] == list(cfg["e2e_methods"])
  for row in result["end_to_end"]:
    _positive(row, ["engine_s", "trainer_s", "ratio"])
    assert row["same_best_epoch"] <= row["members"]
  assert set(result["summary"]) >= {"aim", "ratio_at_largest", "aim_met", "end_to_end_ratio"}
  assert result["machine"]["load_average_1min"]["samples"]
