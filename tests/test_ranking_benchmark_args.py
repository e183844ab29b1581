"""benchmarks/ranking.py: model names are checked up front and the single-task baseline runs only
the methods that need no shared parameter (no training here)."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "ranking.py")


@pytest.fixture(scope="module")
def ranking():
  spec = importlib.util.spec_from_file_location("ranking_benchmark", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_single_task_keeps_only_methods_without_shared_parameters(ranking, capsys):
  methods = ["equal", "pub", "nash_mtl", "uncertainty"]
  assert ranking.methods_for("single_task", methods) == ["equal", "uncertainty"]
  assert "not run with ['pub', 'nash_mtl']" in capsys.readouterr().err
  assert ranking.methods_for("mmoe", methods) == methods


def test_unknown_model_is_refused_before_any_data_is_built(ranking, capsys):
  with pytest.raises(SystemExit) as err:
    ranking.main(["--models", "mmoe,nope", "--no-run", "--no-multi-fashion"])
  assert err.value.code == 2
  assert "unknown or no model(s) ['nope']" in capsys.readouterr().err
