"""Data-parallel training with jax.sharding gives the one-device parameters, with no host transfer.

The check runs in a child process started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(the flag must be set before jax is imported, and this pytest process already imported jax with
one CPU device). The child trains a small MMoE with ``pub_adam`` for 20 steps twice, with the
library's own jitted ``Trainer.train_step``: once on one device, once on a ``Mesh`` over all 8
devices with the batch sharded ``P("data")`` and params / model state / optimizer state
replicated, the sharded steps running under ``jax.transfer_guard("disallow")``; then once more on
the mesh with row-sparse embedding gradients (``sparse_embeddings=True``).

The model uses LayerNorm and no dropout so that the comparison is about partitioning the step and
nothing else. BatchNorm is not a clean test case: under ``jit`` its batch statistics over a sharded
batch are one cross-device reduction (global statistics, only summed in another order; they would be
per-shard under ``shard_map`` or ``pmap``), but the Linear bias in front of it has a gradient that is
zero in exact arithmetic, and Adam scales that rounding noise up to full-size steps, so the bias
differs between any two summation orders. Dropout masks depend on how random bits are partitioned.

Adam's ``eps`` is 1e-6 here rather than 1e-8 for the same reason: a coordinate whose second
moment is of the order of eps² (an embedding row seen once, a bias whose batch gradient nearly
cancels) turns the reordered sum's rounding into a visible change of its step. With the default
eps and convex scaling, one such leaf (the dense-feature bias) differed by 1.9e-4 relative after 20
steps while every other leaf agreed to ~2e-7; with eps 1e-6 all agree to ~1e-7. Equal weighting,
MGDA, ``pub_fixed`` and PUB with rms or raw scaling passed with the default eps as well.

Both sides are compiled without XLA's optimisation passes (sharding propagation and the SPMD
partitioner still run); with them the figures below are the same to within a factor of two.

"Same parameters" is checked per leaf as ``‖a − b‖ / ‖a‖ <= 1e-5`` (observed ~3e-7). The largest
single element, ``max|a − b| / max|a|``, is held to 1e-4 (observed ~5e-6): Adam divides every
coordinate's gradient by its own RMS, so a coordinate whose gradient is mostly cancellation between
rows carries the reordered sum's rounding into an update of ordinary size.
"""

import json
import os
import subprocess
import sys

import pytest

DEVICES = 8
STEPS = 20
BATCH = 256  # 32 rows per device
RTOL = 1e-5  # per leaf, ‖a − b‖ / ‖a‖
ELEMENT_RTOL = 1e-4  # per leaf, max|a − b| / max|a|


def _child() -> dict:
  """Runs in the child process: trains on 1 and on 8 devices, returns the comparison."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P

  import pub_optax  # pylint: disable=import-outside-toplevel
  from pub_optax.ranking.data import generate_aliexpress, iterate_batches  # pylint: disable=import-outside-toplevel
  from pub_optax.ranking.models import build_model  # pylint: disable=import-outside-toplevel
  from pub_optax.ranking.train import Trainer  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  assert len(devices) == DEVICES, devices
  data = generate_aliexpress(BATCH * 4, seed=0, max_cardinality=2000, conversion_rate=0.2)
  model = build_model(
    "mmoe",
    data.cardinalities,
    data.numerical.shape[1],
    2,
    rngs=nnx.Rngs(0),
    embed_dim=8,
    n_experts=3,
    expert_dims=(32,),
    tower_dims=(16,),
    norm="layer",
    dropout=0.0,
  )
  trainer = Trainer(
    model, pub_optax.pub_adam(1e-3, eps=1e-6, num_tasks=2, shared=model.shared_mask())
  )
  host_batches = list(iterate_batches(data, BATCH, shuffle=True, seed=0))

  def train(place_state, place_batch, guard, trainer=trainer):
    params, rest = place_state(trainer.params), place_state(trainer.rest)
    opt_state = place_state(trainer.tx.init(trainer.params))
    batches = [place_batch(b) for b in host_batches]  # on device before the steps
    with jax.transfer_guard(guard):
      for i in range(STEPS):
        out = trainer.train_step(params, rest, opt_state, batches[i % len(batches)])
        params, rest, opt_state = out.params, out.rest, out.opt_state
      jax.block_until_ready(params)
    return params, out.weights, batches

  one = lambda tree: jax.device_put(tree, devices[0])
  single, single_weights, _ = train(one, one, "allow")

  mesh = Mesh(np.array(devices), ("data",))
  replicated, by_rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  sharded, sharded_weights, batches = train(
    lambda tree: jax.device_put(tree, replicated),
    lambda tree: jax.device_put(tree, by_rows),
    "disallow",
  )

  # Row-sparse embedding gradients (tables of up to 2000 ids > 256 rows per batch) on the same mesh.
  sparse_trainer = Trainer(model, trainer.tx, sparse_embeddings=True)
  sparse, _, _ = train(
    lambda tree: jax.device_put(tree, replicated),
    lambda tree: jax.device_put(tree, by_rows),
    "disallow",
    sparse_trainer,
  )

  try:  # the guard is live: a batch still on the host is refused
    with jax.transfer_guard("disallow"):
      trainer.train_step(sharded, trainer.rest, trainer.tx.init(trainer.params), host_batches[0])
    guard_refused_host_batch = False
  except Exception:  # noqa: BLE001 - jax raises a plain RuntimeError-like error here
    guard_refused_host_batch = True
  single_np, sharded_np, sparse_np, start = jax.device_get(
    (single, sharded, sparse, trainer.params)
  )
  diffs = {
    jax.tree_util.keystr(path): float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
    for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(single_np), jax.tree.leaves(sharded_np)
    )
  }
  norm_diffs = [
    float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
    for a, b in zip(jax.tree.leaves(single_np), jax.tree.leaves(sharded_np))
  ]
  sparse_norm_diffs = [
    float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
    for a, b in zip(jax.tree.leaves(single_np), jax.tree.leaves(sparse_np))
  ]
  moved = max(
    float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(single_np), jax.tree.leaves(start))
  )
  return dict(
    max_rel_diff=max(diffs.values()),
    max_norm_rel_diff=max(norm_diffs),
    sparse_max_norm_rel_diff=max(sparse_norm_diffs),
    worst_leaf=max(diffs, key=diffs.get),
    max_param_move=moved,
    weights_single=np.asarray(single_weights).tolist(),
    weights_sharded=np.asarray(sharded_weights).tolist(),
    guard_refused_host_batch=guard_refused_host_batch,
    params_replicated=all(x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded)),
    params_devices=sorted({len(x.sharding.device_set) for x in jax.tree.leaves(sharded)}),
    batch_rows_per_device=sorted(
      {s.data.shape[0] for s in batches[0]["labels"].addressable_shards}
    ),
  )


@pytest.fixture(scope="module")
def result():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # both sides alike; compilation dominates
  proc = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_training_matches_one_device(result):
  # the 20 steps really trained: measured 0.021, from 0 when untrained
  assert result["max_param_move"] > 2e-3, result
  assert result["max_norm_rel_diff"] <= RTOL, result
  assert result["max_rel_diff"] <= ELEMENT_RTOL, result
  assert result["weights_sharded"] == pytest.approx(result["weights_single"], rel=RTOL)


def test_sharded_row_sparse_training_matches_one_device(result):
  # Trainer(sparse_embeddings=True) on the mesh, under the same transfer guard, against dense on one device
  assert result["sparse_max_norm_rel_diff"] <= RTOL, result


def test_transfer_guard_was_live(result):
  # the sharded steps above ran under the same guard, which does refuse a host batch
  assert result["guard_refused_host_batch"], result


def test_step_is_data_parallel(result):
  # params (and so the whole state) stay replicated on all devices, each device holds 1/8 of a batch
  assert result["params_replicated"] and result["params_devices"] == [DEVICES], result
  assert result["batch_rows_per_device"] == [BATCH // DEVICES], result


if __name__ == "__main__":
  print(json.dumps(_child()))
