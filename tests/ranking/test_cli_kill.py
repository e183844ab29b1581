"""The pub-optax command killed (SIGKILL) in the middle of a checkpoint write, then resumed."""

import hashlib
import json
import os
import signal
import subprocess
import sys

from pub_optax.ranking import experiment

# The smallest run of test_cli_runs.py with two seeds on the default (sweep) engine, over two
# epochs so that the second checkpoint write replaces a checkpoint already on disk.
RUN = ["--methods", "equal", "--rows", "1500", "--batch-size", "256", "--lr", "1e-2"]
RUN += ["--epochs", "2", "--seeds", "2", "--no-progress"]

# Runs the command to the end in argv[1], then again in argv[2] with the file write of the
# second checkpoint stopped halfway: half the bytes reach the temporary file, the line printed
# records what was on disk, and the process kills itself with SIGKILL (no handler, no cleanup).
KILLED_MID_WRITE = """
import builtins, hashlib, json, os, signal, sys
from pub_optax.ranking import cli, experiment

out_straight, out_killed, run = sys.argv[1], sys.argv[2], sys.argv[3:]
assert cli.main(["train", "--out", out_straight, *run]) == 0
opened = []

class HalfWriteThenKill:
  def __init__(self, file, target):
    self.file, self.target = file, target

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.file.close()

  def write(self, blob):
    with builtins.open(self.target, "rb") as f:
      before = hashlib.sha256(f.read()).hexdigest()
    self.file.write(blob[: len(blob) // 2])
    self.file.flush()
    os.fsync(self.file.fileno())
    record = {"tmp": self.file.name, "size": len(blob), "written": len(blob) // 2}
    print(json.dumps({**record, "before": before}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

def open_checkpoint(path, mode="r", *args, **kwargs):
  file = builtins.open(path, mode, *args, **kwargs)
  if ".ckpt.tmp" not in str(path):
    return file
  opened.append(path)
  return file if len(opened) < 2 else HalfWriteThenKill(file, str(path).rsplit(".tmp", 1)[0])

experiment.open = open_checkpoint  # the name atomic_write_bytes opens its temporary with
cli.main(["train", "--out", out_killed, *run])
"""


def _sha256(path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(path) -> dict:
  """results.json without its timings, command line and machine: what must repeat exactly."""
  report = json.loads(path.read_text())
  for key in ("seconds", "command", "arguments", "machine"):
    report.pop(key)
  for r in report["runs"]:
    for v in r["val_history"]:
      v.pop("train_seconds")
  return report


def test_killed_in_a_checkpoint_write_resumes_to_the_uninterrupted_result(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  # Both processes share a compilation cache: the resumed one does not compile again.
  env = dict(
    os.environ,
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )
  argv = [sys.executable, "-c", KILLED_MID_WRITE, str(straight), str(killed), *RUN]
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
  seen = json.loads(stdout.splitlines()[-1])

  checkpoint = killed / "checkpoints" / "equal.ckpt"
  partial = checkpoint.with_name(f"{checkpoint.name}.tmp{proc.pid}")
  assert seen["tmp"] == str(partial)
  assert partial.stat().st_size == seen["written"] and 0 < seen["written"] < seen["size"]
  assert _sha256(checkpoint) == seen["before"]  # the first epoch's checkpoint, untouched
  metadata = experiment.checkpoint_metadata(checkpoint.read_bytes(), str(checkpoint))
  assert [member["epoch"] for member in metadata["progress"]] == [1, 1]
  assert not (killed / "results.json").exists()

  resumed = subprocess.run(
    [sys.executable, "-m", "pub_optax", "train", "--out", str(killed), *RUN, "--resume"],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"removed {partial}, left by an interrupted write" in resumed.stderr
  for seed in (0, 1):
    assert f"equal seed {seed} epoch 1/2" not in resumed.stdout  # epoch 1 came from the checkpoint
    assert f"equal seed {seed} epoch 2/2" in resumed.stdout
  assert not list(killed.rglob("*.tmp*"))
  assert _numbers(killed / "results.json") == _numbers(straight / "results.json")
