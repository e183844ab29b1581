"""The pub-optax command end to end on small generated data: outputs, resume, every model, errors."""

import json
import os

import numpy as np
import pytest

from pub_optax.ranking import cli
from pub_optax.ranking.data import generate_splits
from pub_optax.ranking.experiment import RunConfig, run
from pub_optax.ranking.models import MODEL_NAMES

pytestmark = pytest.mark.usefixtures("fast_compiles")

SMALL = ["--rows", "1500", "--batch-size", "256", "--lr", "1e-2", "--no-progress"]
# Tests that call the experiment directly generate 4 categorical fields, not the schema's 16:
# checkpoints and compiled steps work alike for any number of tables, and compile faster.
FIELDS = 4


def test_train_writes_table_json_and_png(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert (
    cli.main(
      ["train", "--methods", "pub,equal", "--epochs", "2", "--seeds", "2", "--out", out] + SMALL
    )
    == 0
  )
  printed = capsys.readouterr().out
  assert "mean auc" in printed and "pub" in printed and "equal" in printed
  report = json.load(open(os.path.join(out, "results.json")))
  assert [r["method"] for r in report["summary"]] == ["pub", "equal"]
  assert len(report["runs"]) == 4
  for r in report["runs"]:
    test = r["test"]
    assert test["mean_auc"] == pytest.approx((test["ctr_auc"] + test["ctcvr_auc"]) / 2)
    assert 0.0 <= test["ctr_auc"] <= 1.0 and test["ctr_logloss"] > 0
    assert len(r["val_history"]) == r["epochs_run"] <= 2
    assert all(len(e["weights"]) == 2 for e in r["log"])
  pub_rows = [r for r in report["runs"] if r["config"]["method"] == "pub"]
  aucs = [r["test"]["mean_auc"] for r in pub_rows]
  summary = report["summary"][0]
  assert summary["mean_auc"] == pytest.approx(np.mean(aucs))
  assert summary["mean_auc_std"] == pytest.approx(np.std(aucs, ddof=1))
  assert open(os.path.join(out, "table.txt")).read().strip() in printed
  with open(os.path.join(out, "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [n for n in os.listdir(out) if ".tmp" in n]  # atomic writes leave no temporaries


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
  splits = generate_splits(2000, 500, 500, seed=0, conversion_rate=0.2, n_categorical=FIELDS)
  base = dict(
    model="mmoe",
    method="pub",
    batch_size=256,
    learning_rate=1e-2,
    patience=5,
    model_kwargs=cli.model_kwargs("mmoe", "small", 0.2),
  )
  ckpt = str(tmp_path / "pub.ckpt")
  first = run(RunConfig(epochs=1, **base), splits, checkpoint=ckpt, progress=False)
  resumed = run(RunConfig(epochs=2, **base), splits, checkpoint=ckpt, progress=False)
  straight = run(RunConfig(epochs=2, **base), splits, checkpoint=None, progress=False)
  assert resumed["val_history"][0] == first["val_history"][0]
  assert resumed["epochs_run"] == 2
  for a, b in zip(resumed["val_history"], straight["val_history"]):
    assert a["mean_auc"] == pytest.approx(b["mean_auc"], abs=1e-6)
  assert resumed["test"]["mean_auc"] == pytest.approx(straight["test"]["mean_auc"], abs=1e-6)


def test_a_learning_rate_sweep_compiles_one_step_and_each_rate_acts():
  from pub_optax.ranking import experiment

  splits = generate_splits(1500, 400, 400, seed=1, conversion_rate=0.2, n_categorical=FIELDS)
  config = lambda lr, seed=0: RunConfig(
    model="mmoe",
    method="pub",
    seed=seed,
    epochs=1,
    batch_size=256,
    learning_rate=lr,
    model_kwargs=cli.model_kwargs("mmoe", "small", 0.0),
  )
  experiment._COMPILED.clear()
  fresh = run(config(3e-2), splits, progress=False)  # compiled for this rate
  experiment._COMPILED.clear()
  sweep = [run(config(lr), splits, progress=False) for lr in (1e-3, 3e-2)]
  sweep.append(run(config(3e-2, seed=1), splits, progress=False))
  ((train_step, _),) = experiment._COMPILED.values()
  assert train_step._cache_size() == 1  # one program for both rates and both seeds
  assert sweep[1]["test"] == fresh["test"]  # the rate came from the state, not from the first run
  assert sweep[0]["test"] != sweep[1]["test"]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_trains_through_the_command(tmp_path, model):
  out = str(tmp_path / model)
  method = "equal" if model == "single_task" else "pub"  # single_task shares nothing to balance
  assert (
    cli.main(
      ["train", "--model", model, "--methods", method, "--epochs", "1", "--seeds", "1"]
      + ["--out", out]
      + SMALL
    )
    == 0
  )
  report = json.load(open(os.path.join(out, "results.json")))
  for r in report["runs"]:
    assert np.isfinite(r["test"]["ctr_auc"]) and np.isfinite(r["test"]["ctcvr_logloss"])


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
  assert cli.main(["train", "--methods", "pub,nope", "--out", str(tmp_path)]) == 2
  assert "unknown method(s) ['nope']" in capsys.readouterr().err
  assert (
    cli.main(["train", "--data", "aliexpress:" + str(tmp_path / "missing"), "--out", str(tmp_path)])
    == 2
  )
  assert "missing" in capsys.readouterr().err
  assert cli.main(["train", "--data", "csv:/x", "--out", str(tmp_path)]) == 2
  assert "unknown --data kind 'csv'" in capsys.readouterr().err
  with pytest.raises(ValueError, match="no learning rate for \\['equal'\\]"):
    cli.parse_rates("pub=1e-3", ["pub", "equal"])
  assert cli.parse_rates("pub=1e-3,default=2e-3", ["pub", "equal"]) == {"pub": 1e-3, "equal": 2e-3}
