"""The pub-optax command refuses bad options and unusable inputs with one line, before training."""

import os
import stat

import pytest

import pub_optax
from pub_optax.ranking import cli
from pub_optax.ranking.data import generate_splits, write_aliexpress_csv


def _error_line(capsys, argv) -> str:
  """Runs the command expecting a usage error; returns the error line it printed."""
  try:
    status = cli.main(argv)
  except SystemExit as exit_info:  # argparse's own conversions exit
    status = exit_info.code
  assert status == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
  "option, value, message",
  [
    ("--epochs", "-1", "--epochs: must be a positive integer, got -1"),
    ("--epochs", "-3", "--epochs: must be a positive integer, got -3"),
    ("--epochs", "two", "--epochs: must be a positive integer, got 'two'"),
    ("--seeds", "0", "--seeds: must be a positive integer, got 0"),
    ("--patience", "0", "--patience: must be a positive integer, got 0"),
    ("--batch-size", "0", "--batch-size: must be a positive integer, got 0"),
    ("--rows", "0", "--rows: must be a positive integer, got 0"),
    ("--data-seed", "-2", "--data-seed: must be a non-negative integer, got -2"),
    ("--val-fraction", "1.5", "--val-fraction: must be in (0, 1), got 1.5"),
    ("--dropout", "1", "--dropout: must be in [0, 1), got 1"),
    ("--conflict", "nan", "--conflict: must be in [0, 1], got nan"),
    ("--conversion-rate", "0", "--conversion-rate: must be in (0, 1], got 0"),
    ("--weight-decay", "-1", "--weight-decay: must be a finite number >= 0, got -1"),
  ],
)
def test_numeric_options_out_of_range_are_usage_errors(capsys, option, value, message):
  assert message in _error_line(capsys, ["train", option, value])


@pytest.mark.parametrize(
  "rates, message",
  [
    ("nan", "--lr: learning rate of pub must be a finite number > 0, got nan"),
    ("inf", "--lr: learning rate of pub must be a finite number > 0, got inf"),
    ("0", "--lr: learning rate of pub must be a finite number > 0, got 0"),
    ("pub=1e-3,equal=-3e-3", "--lr: learning rate of equal must be a finite number > 0, got -3e-3"),
    ("pub=1e-3,equal=fast", "--lr: learning rate of equal must be a finite number > 0, got 'fast'"),
    ("pub=1e-3,equal", "--lr: 'equal' is not METHOD=RATE"),
    ("pub=1e-3", "--lr: gives no learning rate for ['equal']; add default=VALUE"),
  ],
)
def test_learning_rates_must_be_finite_and_positive(capsys, rates, message):
  assert message in _error_line(capsys, ["train", "--methods", "pub,equal", "--lr", rates])


@pytest.mark.parametrize(
  "methods, message",
  [
    (",", "--methods: no method given"),
    ("", "--methods: no method given"),
    ("equal,equal", "--methods: 'equal' is listed twice"),
    ("pub,nope", "--methods: unknown method(s) ['nope']; valid:"),
  ],
)
def test_method_list_must_be_non_empty_known_and_distinct(capsys, methods, message):
  assert message in _error_line(capsys, ["train", "--methods", methods])


def test_abbreviated_options_are_refused(capsys):
  assert "unrecognized arguments: --epoch" in _error_line(capsys, ["train", "--epoch", "1"])


def test_help_shows_defaults_and_plain_text(capsys):
  with pytest.raises(SystemExit):
    cli.main(["train", "--help"])
  text = capsys.readouterr().out
  assert "(default: 3e-2)" in text and "(default: 512)" in text
  assert "``" not in text
  assert "checkpoint" in text


def test_version_flag_prints_the_package_version(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--version"])
  assert exit_info.value.code == 0
  assert pub_optax.__version__ in capsys.readouterr().out


def test_out_pointing_at_a_file_fails_before_loading_data(tmp_path, capsys):
  target = tmp_path / "results"
  target.write_text("not a folder")
  line = _error_line(capsys, ["train", "--out", str(target)])
  assert f"--out {target}: " in line and "not a folder" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_out_in_a_read_only_folder_fails_before_loading_data(tmp_path, capsys):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    line = _error_line(capsys, ["train", "--out", str(locked / "run")])
  finally:
    locked.chmod(stat.S_IRWXU)
  assert "--out" in line and "cannot write" in line


def test_out_check_refuses_an_unwritable_folder(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

  monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
  with pytest.raises(cli.UsageError, match="cannot write .*Permission denied"):
    cli.check_output_folder(str(tmp_path / "run"))


def test_a_split_whose_task_has_no_positive_is_refused_before_training(tmp_path, capsys):
  splits = generate_splits(600, 0, 200, seed=3, conversion_rate=0.2)
  for name in ("train", "test"):
    write_aliexpress_csv(splits[name], tmp_path / f"{name}.csv")
  argv = ["train", "--data", f"aliexpress:{tmp_path}", "--epochs", "3", "--methods", "equal"]
  assert cli.main(argv + ["--batch-size", "64", "--out", str(tmp_path / "run")]) == 2
  captured = capsys.readouterr()
  assert "epoch" not in captured.out  # nothing was trained
  line = captured.err.strip()
  assert "\n" not in line and "Traceback" not in line
  assert "split val, task ctcvr: 0 positives and 60 negatives" in line


def test_an_empty_test_split_is_refused_before_training(tmp_path, capsys):
  splits = generate_splits(300, 0, 100, seed=0)
  write_aliexpress_csv(splits["train"], tmp_path / "train.csv")
  with open(tmp_path / "train.csv") as f:
    header = f.readline()
  (tmp_path / "test.csv").write_text(header)
  argv = ["train", "--data", f"aliexpress:{tmp_path}", "--out", str(tmp_path / "run")]
  assert cli.main(argv) == 2
  line = capsys.readouterr().err.strip()
  assert "test.csv" in line and "no data rows" in line and "\n" not in line
