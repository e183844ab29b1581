"""Every loader turns an unusable file into a one-line DataError naming the file (and line)."""

import builtins

import numpy as np
import pytest

from pub_optax.ranking import cli
from pub_optax.ranking.data import aliccp, aliexpress, generate_splits, write_aliexpress_csv
from pub_optax.ranking.data.aliexpress import load_aliexpress, load_aliexpress_raw
from pub_optax.ranking.data.types import DataError
from pub_optax.ranking.experiment import CheckpointError, checkpoint_metadata


@pytest.fixture
def processed(tmp_path):
  splits = generate_splits(200, 0, 100, seed=0)
  for name in ("train", "test"):
    write_aliexpress_csv(splits[name], tmp_path / f"{name}.csv")
  return tmp_path


def _one_line_error(call, match) -> str:
  with pytest.raises(DataError, match=match) as info:
    call()
  assert "\n" not in str(info.value)
  return str(info.value)


def test_processed_csv_with_a_byte_order_mark_reads_like_without(processed):
  plain = load_aliexpress(processed)
  text = (processed / "test.csv").read_bytes()
  (processed / "test.csv").write_bytes(b"\xef\xbb\xbf" + text)
  marked = load_aliexpress(processed)
  assert np.array_equal(marked["test"].categorical, plain["test"].categorical)


@pytest.mark.parametrize(
  "content",
  [
    pytest.param(lambda text: text.encode("utf-16"), id="utf16"),
    pytest.param(lambda text: bytes(range(256)) * 4, id="binary"),
  ],
)
def test_processed_csv_that_is_not_utf8_names_file_and_line(processed, content):
  path = processed / "test.csv"
  path.write_bytes(content(path.read_text()))
  _one_line_error(lambda: load_aliexpress(processed), rf"{path}, line 1: not UTF-8 text")


def test_empty_processed_csv_is_an_error(processed):
  (processed / "test.csv").write_text("")
  _one_line_error(lambda: load_aliexpress(processed), r"test\.csv: empty file; expected a header")


def test_header_only_split_is_an_error(processed):
  header = (processed / "test.csv").read_text().splitlines()[0]
  (processed / "test.csv").write_text(header + "\n")
  _one_line_error(lambda: load_aliexpress(processed), r"test\.csv: no data rows, so split test")


def test_truncated_last_line_names_line_and_column(processed):
  path = processed / "test.csv"
  text = path.read_text()
  path.write_text(text[: len(text) - 40])
  _one_line_error(lambda: load_aliexpress(processed), r"test\.csv, line 101, column \d+ .*missing")


def test_unreadable_file_is_named(processed, monkeypatch):
  real_open = builtins.open

  def refuse(path, *args, **kwargs):
    if str(path).endswith("test.csv"):
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(aliexpress, "open", refuse, raising=False)
  _one_line_error(
    lambda: load_aliexpress(processed), r"test\.csv: cannot read the file: Permission denied"
  )


def test_empty_raw_item_file_is_an_error(tmp_path):
  user = ",".join(["7"] + ["1"] * 32) + "\n"
  item = ",".join(["7"] + ["0"] * 47 + ["2"]) + "\n"
  for split in ("train", "test"):
    (tmp_path / f"NL_user_{split}").write_text(user)
    (tmp_path / f"NL_item_{split}").write_text(item if split == "train" else "")
  _one_line_error(
    lambda: load_aliexpress_raw(tmp_path, "NL"), r"NL_item_test: no data rows, so split test"
  )


GOOD = "1,1,1,u1,1,205\x0233\x031.0\n"
COMMON = "u1,1,101\x0211\x031.0\n"


def _aliccp(directory, train=GOOD, common=COMMON, encoding="utf-8"):
  for split in ("train", "test"):
    (directory / f"common_features_{split}.csv").write_bytes(common.encode(encoding))
    skeleton = train if split == "train" else GOOD
    (directory / f"sample_skeleton_{split}.csv").write_bytes(skeleton.encode(encoding))


def test_aliccp_extra_column_is_an_error(tmp_path):
  _aliccp(tmp_path, GOOD + "2,0,0,u1,1,205\x0233\x031.0,7\n")
  _one_line_error(
    lambda: aliccp.load_aliccp(tmp_path),
    r"sample_skeleton_train\.csv, line 2, column 7: unexpected extra column; expected 6",
  )


def test_aliccp_feature_id_beyond_64_bits_names_file_line_and_entry(tmp_path):
  _aliccp(tmp_path, GOOD + "2,0,0,u1,1,205\x02" + "9" * 25 + "\x031.0\n")
  _one_line_error(
    lambda: aliccp.load_aliccp(tmp_path),
    r"sample_skeleton_train\.csv, line 2, column 6 \(feature_string\), entry 1: feature id 9+ "
    r"does not fit",
  )


def test_aliccp_with_a_byte_order_mark_reads_like_without(tmp_path):
  _aliccp(tmp_path)
  plain = aliccp.load_aliccp(tmp_path, sparse_fields=("101", "205"))
  _aliccp(tmp_path, encoding="utf-8-sig")
  marked = aliccp.load_aliccp(tmp_path, sparse_fields=("101", "205"))
  assert marked["train"].categorical.tolist() == plain["train"].categorical.tolist() == [[1, 1]]


def test_aliccp_utf16_file_names_file_and_line(tmp_path):
  _aliccp(tmp_path, encoding="utf-16")
  _one_line_error(
    lambda: aliccp.load_aliccp(tmp_path), r"common_features_train\.csv, line 1: not UTF-8 text"
  )


def test_aliccp_empty_split_is_an_error(tmp_path):
  _aliccp(tmp_path, train="")
  _one_line_error(lambda: aliccp.load_aliccp(tmp_path), r"sample_skeleton_train\.csv: no data rows")


def test_aliccp_unreadable_file_is_named(tmp_path, monkeypatch):
  _aliccp(tmp_path)

  def refuse(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))

  monkeypatch.setattr(aliccp, "open", refuse, raising=False)
  _one_line_error(
    lambda: aliccp.load_aliccp(tmp_path), r"\.csv: cannot read the file: Permission denied"
  )


def test_truncated_checkpoint_names_its_file():
  with pytest.raises(CheckpointError, match=r"run/a\.ckpt: not a readable checkpoint"):
    checkpoint_metadata(b"\x78\x01\x00\x01", "run/a.ckpt")


def test_command_reports_a_loader_error_in_one_line(processed, capsys):
  path = processed / "test.csv"
  path.write_bytes(path.read_text().encode("utf-16"))
  argv = ["train", "--data", f"aliexpress:{processed}", "--out", str(processed / "run")]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert f"pub-optax: error: {path}, line 1: not UTF-8 text" in err
