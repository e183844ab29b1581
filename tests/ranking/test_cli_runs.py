"""The pub-optax command's output, checkpoints, resume checks and divergence on tiny runs."""

import contextlib
import io
import json
import os
import shutil

import jax
import numpy as np
import pytest

from pub_optax.ranking import cli, experiment
from pub_optax.ranking.data import generate_splits
from pub_optax.ranking.experiment import CheckpointError, RunConfig, run
from pub_optax.ranking.sweep import run_seeds

pytestmark = pytest.mark.usefixtures("fast_compiles")

TINY = ["--rows", "1500", "--batch-size", "256", "--lr", "1e-2", "--epochs", "1", "--seeds", "1"]
ORPHAN = "results.json.tmp999999999"  # the temporary of a writer that no longer runs


def _main(argv) -> tuple[int, str, str]:
  """Runs the command with stdout and stderr captured (neither is a terminal)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    status = cli.main(argv)
  return status, out.getvalue(), err.getvalue()


def _numbers(report: dict) -> dict:
  """A report without its timings and command line: what must repeat exactly."""
  report = json.loads(json.dumps(report))
  for key in ("seconds", "command", "arguments", "machine"):
    report.pop(key)
  for r in report["runs"]:
    for v in r["val_history"]:
      v.pop("train_seconds")
  return report


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """One finished run (equal, one seed, one epoch, the default engine) with orphaned temporaries
  beforehand."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  out = tmp_path_factory.mktemp("run")
  (out / "checkpoints").mkdir()
  (out / ORPHAN).write_text("half")
  (out / "checkpoints" / "equal.ckpt.tmp999999999").write_text("half")
  (out / "notes.tmp").write_text("mine")
  argv = ["train", "--methods", "equal", "--out", str(out)] + TINY
  status, stdout, stderr = _main(argv)
  yield {"out": out, "argv": argv, "status": status, "stdout": stdout, "stderr": stderr}
  jax.config.update("jax_disable_most_optimizations", previous)


def test_prints_validation_auc_per_epoch_and_the_chosen_epoch(finished):
  assert finished["status"] == 0
  lines = finished["stdout"].splitlines()
  assert any(
    line.startswith("equal seed 0 epoch 1/1: validation AUC ctr ") and " mean " in line
    for line in lines
  )
  assert any(line.startswith("equal seed 0: chosen epoch 1 of 1") for line in lines)


def test_one_seed_prints_values_without_spread_and_a_legend(finished):
  table = (finished["out"] / "table.txt").read_text()
  assert "±" not in table
  assert "upd rms: median over logged steps of the RMS of the update applied to the shared" in table
  assert "mean auc: average of the task AUCs" in table


def test_progress_without_a_terminal_is_one_line_per_epoch(finished):
  assert "\r" not in finished["stderr"]
  bars = [line for line in finished["stderr"].splitlines() if "epoch 1/1 [" in line]
  assert len(bars) == 1 and "train loss ctr" in bars[0]


def test_orphaned_temporaries_of_the_command_are_removed(finished):
  out = finished["out"]
  assert not (out / ORPHAN).exists()
  assert not (out / "checkpoints" / "equal.ckpt.tmp999999999").exists()
  assert (out / "notes.tmp").read_text() == "mine"  # not the command's pattern: kept


def test_the_same_command_twice_gives_identical_numbers(finished, tmp_path):
  again = str(tmp_path / "again")
  argv = [a if a != str(finished["out"]) else again for a in finished["argv"]]
  assert _main(argv)[0] == 0
  first = json.loads((finished["out"] / "results.json").read_text())
  second = json.loads(open(os.path.join(again, "results.json")).read())
  assert _numbers(first) == _numbers(second)


def test_checkpoint_is_a_fraction_of_the_training_state(finished):
  path = finished["out"] / "checkpoints" / "equal.ckpt"
  splits = generate_splits(1500, 375, 375, seed=0, conversion_rate=0.2)
  config = RunConfig(
    model="mmoe", method="equal", model_kwargs=cli.model_kwargs("mmoe", "small", 0.2)
  )
  trainer = experiment._make_trainer(config, splits["train"])
  params = sum(x.nbytes for x in jax.tree.leaves(trainer.params))
  # parameters, two Adam moments and the best parameters held uncompressed would be 4x
  assert os.path.getsize(path) < params / 2


@pytest.mark.parametrize(
  "change, named",
  [
    (["--lr", "3e-2"], "--lr {'equal': 0.01} (now {'equal': 0.03})"),
    (["--data-seed", "5"], "--data-seed 0 (now 5)"),
    (["--methods", "pub"], "--methods ['equal'] (now ['pub'])"),
    (["--model", "ple"], "--model 'mmoe' (now 'ple')"),
  ],
)
def test_resume_with_other_options_is_refused_naming_them(finished, tmp_path, change, named):
  out = tmp_path / "run"
  shutil.copytree(finished["out"], out)
  argv = [a if a != str(finished["out"]) else str(out) for a in finished["argv"]]
  status, stdout, stderr = _main(argv + ["--resume"] + change)
  assert status == 2 and "epoch" not in stdout
  assert stderr.count("\n") == 1 and "Traceback" not in stderr
  assert named in stderr and "--resume" in stderr


def test_resume_with_other_data_is_refused(finished):
  record = json.loads((finished["out"] / "checkpoints" / "command.json").read_text())
  other = json.loads(json.dumps(record["data"]))
  other["train"]["sample_sha256"] = "0" * 16
  with pytest.raises(CheckpointError, match="the data differ"):
    cli.check_resume(record, record["options"], other, "run/checkpoints/command.json")


def test_truncated_checkpoint_is_named_in_a_one_line_error(finished, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(finished["out"], out)
  checkpoint = out / "checkpoints" / "equal.ckpt"
  checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
  argv = [a if a != str(finished["out"]) else str(out) for a in finished["argv"]]
  status, _, stderr = _main(argv + ["--resume"])
  assert status == 2 and stderr.count("\n") == 1
  assert f"{checkpoint}: not a readable checkpoint (truncated or corrupt" in stderr


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
  splits = generate_splits(1000, 300, 300, seed=0, conversion_rate=0.3)
  config = dict(
    model="mmoe",
    method="pub",
    batch_size=256,
    learning_rate=1e-2,
    patience=5,
    model_kwargs=cli.model_kwargs("mmoe", "small", 0.2),
  )
  checkpoint = str(tmp_path / "pub.ckpt")
  run(RunConfig(epochs=1, **config), splits, checkpoint=checkpoint, progress=False)
  resumed = run(RunConfig(epochs=2, **config), splits, checkpoint=checkpoint, progress=False)
  straight = run(RunConfig(epochs=2, **config), splits, progress=False)
  strip = lambda r: [{k: v for k, v in e.items() if k != "train_seconds"} for e in r]
  assert strip(resumed["val_history"]) == strip(straight["val_history"])
  assert resumed["test"] == straight["test"] and resumed["log"] == straight["log"]


def test_resumed_seeds_of_the_sweep_engine_are_bit_identical_to_uninterrupted_ones(
  finished, tmp_path
):
  # The settings of the finished command's run, so the engine's compiled programs are reused.
  splits = generate_splits(1500, 375, 375, seed=0, conversion_rate=0.2)
  config = dict(model="mmoe", method="equal", batch_size=256, learning_rate=1e-2, log_every=2)
  config.update(model_kwargs=cli.model_kwargs("mmoe", "small", 0.2))
  checkpoint = str(tmp_path / "equal.ckpt")
  first = run_seeds(RunConfig(epochs=1, **config), splits, (0,), checkpoint=checkpoint)
  assert [r["epochs_run"] for r in first] == [1]
  resumed = run_seeds(RunConfig(epochs=2, **config), splits, (0,), checkpoint=checkpoint)
  straight = run_seeds(RunConfig(epochs=2, **config), splits, (0,), progress=False)
  strip = lambda r: [{k: v for k, v in e.items() if k != "train_seconds"} for e in r]
  for a, b in zip(resumed, straight):
    assert a["epochs_run"] == b["epochs_run"] == 2
    assert strip(a["val_history"]) == strip(b["val_history"])
    assert a["test"] == b["test"] and a["log"] == b["log"]
    assert a.keys() == {
      "config",
      "test",
      "best_epoch",
      "epochs_run",
      "val_history",
      "log",
      "diverged",
    }
  assert [e["step"] for e in straight[0]["log"]] == [0, 2, 4, 5, 7, 9]  # every 2nd and each last


def test_sparse_embeddings_train_with_the_loop_and_say_so(capsys):
  args = cli.build_parser().parse_args(["train", "--sparse-embeddings"])
  assert cli.engine_for(args) == "loop"
  assert "--sparse-embeddings trains each seed in its own loop" in capsys.readouterr().err
  args = cli.build_parser().parse_args(["train"])
  assert (args.engine, args.seeds, cli.engine_for(args)) == ("sweep", 3, "sweep")


def test_a_diverging_run_is_recorded_and_the_others_still_run(tmp_path):
  out = tmp_path / "run"
  argv = ["train", "--methods", "equal,pub", "--out", str(out)] + TINY
  status, stdout, stderr = _main(argv + ["--lr", "equal=1e30,pub=1e-2"])
  assert status == 1
  report = json.loads((out / "results.json").read_text())
  assert [(d["method"], d["seed"], d["epoch"]) for d in report["diverged"]] == [("equal", 0, 1)]
  pub = [r for r in report["runs"] if r["config"]["method"] == "pub"][0]
  assert pub["diverged"] is None and pub["test"]["mean_auc"] > 0
  assert "seed 0 at epoch 1" in (out / "table.txt").read_text()
  assert "equal seed 0: DIVERGED at epoch 1" in stdout
  assert "1 run(s) diverged (equal seed 0 at epoch 1)" in stderr and "Traceback" not in stderr


def test_the_first_epoch_is_chosen_even_when_its_score_is_nan():
  info = {"best_epoch": -1, "best_val": float("-inf")}
  assert experiment._is_better(float("nan"), info)
  info = {"best_epoch": 1, "best_val": 0.6}
  assert not experiment._is_better(float("nan"), info) and experiment._is_better(0.7, info)


def test_plot_names_tasks_axes_model_data_and_rates():
  run_result = lambda method, lr: {
    "config": {"method": method, "seed": 0, "model": "mmoe", "learning_rate": lr},
    "val_history": [{"epoch": 1, "mean_auc": 0.6}, {"epoch": 2, "mean_auc": 0.62}],
    "log": [{"step": s, "weights": [0.4, 0.6], "shared_update_rms": 1e-3} for s in (0, 10)],
  }
  results = [run_result("pub", 1e-3), run_result("equal", 3e-3)]
  fig = cli.curves_figure(results, ("ctr", "ctcvr"), "generated")
  try:
    axes = fig.axes
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    labels = axes[1].get_legend_handles_labels()[1]
    assert labels == ["pub ctr", "pub ctcvr", "equal ctr", "equal ctcvr"]
    title = fig._suptitle.get_text()
    assert "mmoe" in title and "generated" in title and "pub 0.001" in title
    assert "equal 0.003" in title
    ticks = axes[0].xaxis.get_major_locator().tick_values(1, 2)
    assert np.allclose(ticks, np.round(ticks))
  finally:
    import matplotlib.pyplot as plt

    plt.close(fig)
