"""Data-parallel PUB training over 1, 2, 4 and 8 devices with jax.sharding: time per step, throughput.

The step is the library's own jitted ``Trainer.train_step`` (``pub_adam`` on an MMoE); data
parallelism comes from the inputs alone: a ``Mesh`` over the first n devices, the batch sharded
``NamedSharding(mesh, P("data"))``, params, model state and optimizer state replicated
``NamedSharding(mesh, P())``. XLA partitions the jitted step with one all-reduce of the stacked
per-task gradients (K times the parameter count, so K times the traffic of a plain data-parallel
Adam step); the look-ahead, the Gram matrix, the Nash solve and the update then run replicated.
The global batch is fixed (strong scaling), so rows/s = batch / step time.

Each device count keeps its own copy of the training state; the counts take one step each in
turn (rotating order), every count seeing the same batches in the same order, so after the run
their parameters must agree: ``max_rel_diff`` is the largest per-leaf ``‖a − b‖ / ‖a‖`` against
one device (``worst_leaf`` names the leaf). It is not zero: the gradient sums are reordered, and
Adam divides each coordinate by its own RMS, so a coordinate whose gradient is mostly cancellation
(a frequent id's embedding, a bias that started at zero) carries that rounding at full step size.
The model uses LayerNorm and no dropout for that comparison (see tests/test_sharding.py for why
BatchNorm is not a clean one).

On a CPU-only machine the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set below before jax is imported) that
share the same cores: those numbers show that the partitioned step is correct and what the
partitioning costs, not a speed-up. On a machine with several accelerators the same script
measures real data-parallel scaling (the flag only affects the host platform).

Usage (from the repository root, package installed):
  python benchmarks/scaling.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()

# pylint: disable=wrong-import-position
import argparse
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

try:  # python -m benchmarks.scaling
  from benchmarks import common
except ImportError:  # python benchmarks/scaling.py
  import common  # type: ignore[no-redef]

import pub_optax
from pub_optax.ranking.data import generate_aliexpress, iterate_batches
from pub_optax.ranking.models import build_model
from pub_optax.ranking.train import Trainer

FULL = dict(
  devices=(1, 2, 4, 8),
  batch_size=2048,
  n_batches=4,
  n_categorical=16,
  embed_dim=16,
  n_experts=8,
  expert_dims=(512, 256),
  tower_dims=(128, 64),
  max_cardinality=100_000,
  num_tasks=2,
  rounds=9,
  lr=1e-3,
)
QUICK = dict(
  devices=(1, 2, 4, 8),
  batch_size=512,
  n_batches=2,
  n_categorical=4,
  embed_dim=8,
  n_experts=2,
  expert_dims=(32,),
  tower_dims=(16,),
  max_cardinality=1000,
  num_tasks=2,
  rounds=4,
  lr=1e-3,
)
CPU_NOTE = (
  "forced host devices share the same CPU cores: these numbers show correctness and the "
  "overhead of partitioning, not a speed-up"
)


class Replica:
  """The training state placed for one device count, stepped by ``trainer.train_step``."""

  def __init__(self, trainer: Trainer, devices, host_batches):
    mesh = Mesh(np.array(devices), ("data",))
    replicated, by_rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    self.trainer = trainer
    self.state = jax.device_put(
      (trainer.params, trainer.rest, trainer.tx.init(trainer.params)), replicated
    )
    self.batches = jax.device_put(host_batches, by_rows)
    self.calls = 0
    start = time.perf_counter()
    jax.block_until_ready(self())  # compiles for these shardings
    self.first_step_s = time.perf_counter() - start

  def __call__(self):
    out = self.trainer.train_step(*self.state, self.batches[self.calls % len(self.batches)])
    self.state = (out.params, out.rest, out.opt_state)
    self.calls += 1
    return out.losses


def max_rel_diff(a, b) -> tuple[float, str]:
  """Largest per-leaf ``‖a − b‖ / ‖a‖`` and the leaf's path."""
  a, b = jax.device_get((a, b))
  return max(
    (float(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-30)), jax.tree_util.keystr(path))
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b))
  )


def run(cfg: dict) -> list[dict]:
  devices = jax.devices()
  counts = [n for n in cfg["devices"] if n <= len(devices) and cfg["batch_size"] % n == 0]
  data = generate_aliexpress(
    cfg["batch_size"] * cfg["n_batches"],
    seed=0,
    n_categorical=cfg["n_categorical"],
    max_cardinality=cfg["max_cardinality"],
  )
  model = build_model(
    "mmoe",
    data.cardinalities,
    data.numerical.shape[1],
    cfg["num_tasks"],
    rngs=nnx.Rngs(0),
    embed_dim=cfg["embed_dim"],
    n_experts=cfg["n_experts"],
    expert_dims=cfg["expert_dims"],
    tower_dims=cfg["tower_dims"],
    norm="layer",
    dropout=0.0,
  )
  trainer = Trainer(
    model, pub_optax.pub_adam(cfg["lr"], num_tasks=cfg["num_tasks"], shared=model.shared_mask())
  )
  host_batches = list(iterate_batches(data, cfg["batch_size"], shuffle=True, seed=0))
  replicas = {n: Replica(trainer, devices[:n], host_batches) for n in counts}
  samples = {n: [] for n in counts}
  for r in range(cfg["rounds"]):
    for n in counts[r % len(counts) :] + counts[: r % len(counts)]:
      samples[n].append(common.time_fn(replicas[n], repeats=1, warmup=0)["median_s"])
  base = counts[0]
  rows = []
  for n in counts:
    step = statistics.median(samples[n])
    rows.append(
      dict(
        devices=n,
        step_s=step,
        p10_s=float(np.percentile(samples[n], 10)),
        p90_s=float(np.percentile(samples[n], 90)),
        rows_per_s=cfg["batch_size"] / step,
        rows_per_device=cfg["batch_size"] // n,
        speedup=statistics.median(a / b for a, b in zip(samples[base], samples[n])),
        **dict(
          zip(
            ("max_rel_diff", "worst_leaf"),
            max_rel_diff(replicas[base].state[0], replicas[n].state[0])
            if n != base
            else (0.0, None),
          )
        ),
        first_step_s=replicas[n].first_step_s,
        samples_s=samples[n],
      )
    )
  return rows


COLUMNS = [
  ("devices", "devices"),
  ("rows_per_device", "rows/device"),
  ("step_s", "step s", ".4f"),
  ("p10_s", "p10 s", ".4f"),
  ("p90_s", "p90 s", ".4f"),
  ("rows_per_s", "rows/s", ".0f"),
  ("speedup", "vs 1 device", ".2f"),
  ("max_rel_diff", "param diff vs 1", ".1e"),
  ("first_step_s", "compile+1st s", ".1f"),
]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick", action="store_true", help="small model, few rounds, unoptimised XLA (< 1 min)"
  )
  parser.add_argument(
    "--json", metavar="PATH", help="write every figure and the configuration here"
  )
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
  # Compilation dominates at the quick sizes, whose figures check that the script runs and that
  # every device count trains to the same parameters, not the speed: XLA's optimisation passes
  # are skipped there.
  jax.config.update("jax_disable_most_optimizations", args.quick)
  start = time.perf_counter()
  rows = run(cfg)
  info = common.machine_info(packages=("jax", "jaxlib", "numpy", "optax", "flax"))
  forced_cpu = jax.default_backend() == "cpu"
  wall = time.perf_counter() - start
  print(
    f"\nData-parallel pub_adam step (Trainer.train_step, batch {cfg['batch_size']} sharded over a 'data' mesh; "
    f"MMoE dim {cfg['embed_dim']}, {cfg['n_experts']}x{cfg['expert_dims']}; {info.get('jax_backend')}, "
    f"{info['cpu_model']}, {info['cpu_count']} cores)"
  )
  common.print_table(rows, COLUMNS)
  if forced_cpu:
    print(f"note: {CPU_NOTE}")
  print(f"wall time {wall:.1f}s")
  if args.json:
    common.write_json(
      args.json,
      dict(
        benchmark="scaling",
        config=cfg,
        machine=info,
        rows=rows,
        wall_s=wall,
        note=CPU_NOTE if forced_cpu else None,
      ),
    )
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
