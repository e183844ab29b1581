"""Cost of one PUB training step on the paper's MMoE ranking model, as ratios inside one run.

Model and data: MMoE (8 experts of widths (512, 256), towers (128, 64), BatchNorm, dropout
0.2, the paper's settings) on generated AliExpress-schema rows (16 categorical fields with
tables of 10 to 100 000 ids, 63 numerical features), batch 2048. For K > 2 tasks the labels
are the two real ones repeated, each copy with 5 % of its labels flipped independently (the
step's cost does not depend on label values). Sweep: K = 2, 4, 8 tasks at the paper's embedding
width 128, and widths 16, 32, 64 at K = 2 (``--embed-dims``/``--tasks`` run any grid). ``--quick``:
a small MMoE (4 fields, 2 experts of width 32, batch 256), width 8, K = 2, compiled without
XLA's optimisation passes.

Every method is one jitted step ``(params, rest, state, batch) -> (params, rest, state,
losses)`` with params, model state and optimizer state donated, as in a training loop:

* ``adam``  — ``jax.value_and_grad`` of the *summed* loss + ``optax.adam``: the fair
  single-loss baseline (one backward pass, one Adam update).
* ``pub``   — ``pub_adam(lr, num_tasks=K, shared=model.shared_mask())`` on
  ``value_and_task_grads`` (one forward, K backward passes in one vmapped VJP).
* ``floor`` — the unavoidable part of the PUB step: the same per-task VJP, the K look-ahead
  Adam updates (one vmapped ``scale_by_adam().update``), the weighted sums on shared leaves
  with *fixed* weights (carried in the state, so XLA cannot fold them), and the one committed
  Adam update. No Gram matrix, no Nash solve.
* ``nash``  — gradient-level Nash-MTL, ``balance(scale_by_adam(), weightings.nash(), lr,
  num_tasks=K, level="gradient", shared=mask)``: K backward passes, one Adam update.
* ``pub_sparse`` — ``pub`` with row-sparse embedding gradients (``model.embedding_lookups()``,
  :mod:`pub_optax.sparse`): the VJP, the K look-aheads and the Gram run on the batch's table rows;
  the other rows take one zero-gradient Adam step. Same result as ``pub`` up to rounding.
* ``floor_sparse`` — the floor of that step: ``balance`` on the same row-sparse gradients with
  weights carried in the state (the Gram matrix is computed but unused, so XLA drops it).
* ``floor_balance`` (only with ``--balance-floor``) — the dense floor built that way, to tell the
  Gram matrix and the solve apart from differences between ``balance`` and the hand-written floor.

Timing: each step is compiled ahead of time (``jit(...).lower(...).compile()``), run once
untimed, then ``repeats`` rounds in which every method takes one step (``block_until_ready``),
the order rotating from round to round. Reported: median seconds per step per method and the
ratios (a) pub/adam, (b) pub/floor, (c) nash/adam, each the median of the per-round ratios
(methods of one round ran seconds apart, so slow drift of a shared machine's load cancels).
A configuration stops after 3 rounds once ``time_budget_s`` of timing is spent.

Memory: ``compiled.memory_analysis()`` of each step: argument + output + temporary bytes minus
the bytes of outputs aliased to donated arguments (a static estimate of the step's peak,
available on every backend; reported as ``mem_*_mb``). On GPU the process's
``peak_bytes_in_use`` after each method's first step is recorded too (``gpu_peak_mb``; it is
cumulative over the process, so it bounds a method's own peak only from above).

Per-task gradients (``--grads``): the ways of getting the K task gradients of the same step
(:func:`grad_variants`: one vmapped VJP, K calls of one VJP, ``jax.jacrev``, K ``jax.grad`` with
K forwards, and ``pub_optax.value_and_task_grads`` as PUB calls it) timed in the same interleaved
rounds as Adam on the summed loss, the PUB step, its ``floor`` and ``summed`` (the same per-task
gradients, their equally weighted sum and one Adam step: the least any method that takes K task
gradients pays); full-size MMoE at width 16, batch 1024, K = 2, 4, 8 (``--quick``: the small
model). ``pub/default``, ``floor/default`` and ``summed/default`` divide each step by its
per-task gradients alone.

Programs: every step is also lowered (not compiled) for cpu, cuda and tpu on the running host,
and the count of ``stablehlo.while`` loops, ``stablehlo.case``/``if`` conditionals and the
custom-call targets of each is printed and stored (``programs`` in each row, ``pub_programs`` in
the summary): what an accelerator would run, visible without one. A platform the program does not
lower for is reported as "does not lower" with the error.

Targets on CPU, judged at the paper's embedding width 128: PUB / floor <= 1.10 for every K
and PUB / Adam <= 2.0 at K = 2.

Usage (from the repository root, package installed):
  python benchmarks/step.py [--quick] [--json PATH] [--embed-dims 16 128 --tasks 2 8] [--rounds 7] [--balance-floor]
  python benchmarks/step.py --grads [--quick] [--json PATH] [--tasks 2 4 8] [--batch-size 1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

try:  # python -m benchmarks.step
  from benchmarks import common
except ImportError:  # python benchmarks/step.py
  import common  # type: ignore[no-redef]

import pub_optax
from pub_optax._balance import resolve_shared
from pub_optax._gram import _LANES_UP_TO_TASKS, leaf_gram, task_sum, weighted_sum
from pub_optax.ranking.data import generate_aliexpress
from pub_optax.ranking.models import apply, build_model, split
from pub_optax.ranking.train import task_losses

METHODS = ("adam", "pub", "floor", "nash", "pub_sparse", "floor_sparse")
FLOOR_GOAL = 1.10  # (b) pub / floor, every K
ADAM_GOAL = 2.0  # (a) pub / adam at K = 2
GOAL_EMBED_DIM = 128

# (embed_dim, K) pairs: K = 2, 4, 8 at the paper's width 128, and the widths 16, 32, 64 at K = 2
# (a full grid would double the run time; --embed-dims/--tasks run any grid).
FULL = dict(
  configs=((128, 2), (128, 4), (128, 8), (64, 2), (32, 2), (16, 2)),
  batch_size=2048,
  n_batches=4,
  n_categorical=16,
  n_experts=8,
  expert_dims=(512, 256),
  tower_dims=(128, 64),
  max_cardinality=100_000,
  repeats=7,
  time_budget_s=60.0,
  lr=1e-3,
)
QUICK = dict(
  configs=((8, 2),),
  batch_size=256,
  n_batches=2,
  n_categorical=4,
  n_experts=2,
  expert_dims=(32,),
  tower_dims=(16,),
  max_cardinality=1000,
  repeats=5,
  time_budget_s=5.0,
  lr=1e-3,
)

# --grads: the per-task-gradient variants on the full-size MMoE at a small width.
GRADS = dict(configs=((16, 2), (16, 4), (16, 8)), batch_size=1024, n_batches=2, repeats=5)
GRADS_QUICK = dict(configs=((8, 2), (8, 4)), repeats=3)


class Method(NamedTuple):
  init: Callable  # params -> optimizer state
  step: Callable  # (params, rest, state, batch) -> (params, rest, state, losses)


def make_batches(cfg: dict, num_tasks: int, seed: int = 0) -> tuple[list[dict], tuple, int]:
  """``n_batches`` device-resident batches with ``num_tasks`` label columns."""
  b, n = cfg["batch_size"], cfg["n_batches"]
  data = generate_aliexpress(
    b * n, seed=seed, n_categorical=cfg["n_categorical"], max_cardinality=cfg["max_cardinality"]
  )
  rng = np.random.default_rng(seed)
  columns = [data.labels[:, k % 2] for k in range(num_tasks)]
  for k in range(2, num_tasks):  # repeated labels, 5 % flipped independently per copy
    columns[k] = np.where(rng.random(len(data)) < 0.05, 1.0 - columns[k], columns[k])
  labels = np.stack(columns, axis=1).astype(np.float32)
  batches = [
    dict(
      categorical=data.categorical[i * b : (i + 1) * b],
      numerical=data.numerical[i * b : (i + 1) * b],
      labels=labels[i * b : (i + 1) * b],
    )
    for i in range(n)
  ]
  return jax.device_put(batches), data.cardinalities, data.numerical.shape[1]


def make_model(
  cfg: dict, cardinalities, n_numerical: int, num_tasks: int, embed_dim: int, **kwargs
):
  return build_model(
    "mmoe",
    cardinalities,
    n_numerical,
    num_tasks,
    rngs=nnx.Rngs(0),
    embed_dim=embed_dim,
    n_experts=cfg["n_experts"],
    expert_dims=cfg["expert_dims"],
    tower_dims=cfg["tower_dims"],
    **kwargs,
  )


def carried_weights() -> pub_optax.weightings.Weighting:
  """A weighting that returns the weights kept in its state (ones), unchanged: the floor's fixed weights."""

  def weigh(gram, state, task_losses=None):
    del gram, task_losses
    return pub_optax.weightings.WeightingResult(state, state, jnp.zeros((), state.dtype))

  return pub_optax.weightings.Weighting(
    init=lambda k, dtype: jnp.ones((k,), dtype), weigh=weigh, name="carried"
  )


def make_losses_fn(graph) -> Callable:
  """``(params, rest, batch) -> ((K,) task losses, new model state)`` of the split model."""

  def losses_fn(params, rest, batch):
    logits, new_rest = apply(graph, params, rest, batch["categorical"], batch["numerical"])
    return task_losses(logits, batch["labels"]), new_rest

  return losses_fn


def make_methods(graph, mask, num_tasks: int, lr: float, lookups: Callable) -> dict[str, Method]:
  """The steps compared, sharing one loss function; ``lookups`` is ``model.embedding_lookups()``."""
  losses_fn = make_losses_fn(graph)

  def task_grads(params, rest, batch):
    return pub_optax.value_and_task_grads(losses_fn, has_aux=True)(params, rest, batch)

  def sparse_task_grads(params, rest, batch):
    compact, compact_batch, to_task_grads = lookups(params, batch)
    out, grads = task_grads(compact, rest, compact_batch)
    return out, to_task_grads(grads)

  def tx_step(tx, grads_fn=task_grads):
    def step(params, rest, state, batch):
      (losses, rest), grads = grads_fn(params, rest, batch)
      updates, state = tx.update(grads, state, params, task_losses=losses)
      return optax.apply_updates(params, updates), rest, state, losses

    return Method(tx.init, step)

  adam = optax.adam(lr)

  def adam_step(params, rest, state, batch):
    def summed(p, r):
      losses, new_rest = losses_fn(p, r, batch)
      return jnp.sum(losses), (losses, new_rest)

    (_, (losses, rest)), grads = jax.value_and_grad(summed, has_aux=True)(params, rest)
    updates, state = adam.update(grads, state, params)
    return optax.apply_updates(params, updates), rest, state, losses

  inner = optax.scale_by_adam()

  def floor_init(params):
    return inner.init(params), jnp.ones((num_tasks,), jnp.float32)

  def floor_step(params, rest, state, batch):
    inner_state, weights = state
    shared = resolve_shared(mask, params)
    (losses, rest), grads = task_grads(params, rest, batch)
    look_ahead = jax.vmap(lambda g: inner.update(g, inner_state, params)[0])(grads)
    summed = jax.tree.map(
      lambda g, m: weighted_sum(weights, g) if m else task_sum(g), grads, shared
    )
    committed, inner_state = inner.update(summed, inner_state, params)
    direction = jax.tree.map(
      lambda d, c, m: weighted_sum(weights, d) if m else c, look_ahead, committed, shared
    )
    params = jax.tree.map(lambda p, d: p - lr * d.astype(p.dtype), params, direction)
    return params, rest, (inner_state, weights), losses

  return dict(
    adam=Method(adam.init, adam_step),
    pub=tx_step(pub_optax.pub_adam(lr, num_tasks=num_tasks, shared=mask)),
    floor=Method(floor_init, floor_step),
    nash=tx_step(
      pub_optax.balance(
        optax.scale_by_adam(),
        pub_optax.weightings.nash(),
        lr,
        num_tasks=num_tasks,
        level="gradient",
        shared=mask,
      )
    ),
    pub_sparse=tx_step(pub_optax.pub_adam(lr, num_tasks=num_tasks, shared=mask), sparse_task_grads),
    floor_sparse=tx_step(
      pub_optax.balance(inner, carried_weights(), lr, num_tasks=num_tasks, shared=mask),
      sparse_task_grads,
    ),
    floor_balance=tx_step(
      pub_optax.balance(inner, carried_weights(), lr, num_tasks=num_tasks, shared=mask)
    ),
    summed=tx_step(
      pub_optax.balance(
        inner, pub_optax.weightings.equal(), lr, num_tasks=num_tasks, level="gradient"
      )
    ),
  )


def memory_mb(compiled) -> float:
  """Static peak estimate of a compiled step: arguments + outputs + temporaries − aliased outputs."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  total = (
    m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  )
  return total / 2**20


def gpu_peak_mb() -> float | None:
  stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
  return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


class Runner:
  """One method's compiled step and its own copy of the training state (threaded through calls)."""

  def __init__(self, method: Method, params, rest, batches, structure: bool = True):
    params = jax.tree.map(jnp.copy, params)
    state = method.init(params)
    rest = jax.tree.map(jnp.copy, rest)
    start = time.perf_counter()
    traced = jax.jit(method.step, donate_argnums=(0, 1, 2)).trace(params, rest, state, batches[0])
    lowered = traced.lower()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    # The program each platform would run (lowered here, no device needed); the running
    # backend's own lowering is reused where its platform name is the lowering name.
    backend = jax.default_backend()
    texts = {backend: lowered.as_text()} if backend in common.PLATFORMS else None
    self.structure = (
      common.program_structure(traced, common.PLATFORMS, texts) if structure else None
    )
    self.carry = (params, rest, state)
    self.batches = batches
    self.calls = 0

  def __call__(self):
    batch = self.batches[self.calls % len(self.batches)]
    params, rest, state, losses = self.compiled(*self.carry, batch)
    self.carry = (params, rest, state)
    self.calls += 1
    return losses


def bench_config(cfg: dict, embed_dim: int, num_tasks: int) -> dict:
  batches, cardinalities, n_numerical = make_batches(cfg, num_tasks)
  model = make_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim)
  graph, params, rest = split(model)
  mask = model.shared_mask()
  shared = resolve_shared(mask, params)
  sizes = [x.size for x in jax.tree.leaves(params)]
  row = dict(
    embed_dim=embed_dim,
    num_tasks=num_tasks,
    params_m=sum(sizes) / 1e6,
    shared_params_m=sum(s for s, m in zip(sizes, jax.tree.leaves(shared)) if m) / 1e6,
    embedding_params_m=sum(cardinalities) * embed_dim / 1e6,
  )
  runners = {}
  names = METHODS + (("floor_balance",) if cfg.get("balance_floor") else ())
  methods = make_methods(graph, mask, num_tasks, cfg["lr"], model.embedding_lookups())
  for name in names:
    method = methods[name]
    runners[name] = runner = Runner(method, params, rest, batches)
    losses = jax.block_until_ready(runner())  # first, untimed step
    if not bool(jnp.all(jnp.isfinite(losses))):
      raise FloatingPointError(f"{name}: non-finite losses {losses}")
    row[f"compile_{name}_s"] = runner.compile_s
    row[f"mem_{name}_mb"] = memory_mb(runner.compiled)
    row[f"gpu_peak_{name}_mb"] = gpu_peak_mb()
  row["programs"] = {name: runner.structure for name, runner in runners.items()}
  # Interleaved rounds, rotating order; stop early once the time budget is spent (>= 3 rounds).
  samples = {name: [] for name in names}
  start = time.perf_counter()
  for r in range(cfg["repeats"]):
    if r >= 3 and time.perf_counter() - start > cfg["time_budget_s"]:
      break
    for name in names[r % len(names) :] + names[: r % len(names)]:
      samples[name].append(common.time_fn(runners[name], repeats=1, warmup=0)["median_s"])
  for name in names:
    row[f"{name}_s"] = statistics.median(samples[name])
  row["rounds"] = len(samples["adam"])
  ratio = lambda a, b: statistics.median(x / y for x, y in zip(samples[a], samples[b]))
  row.update(
    pub_over_adam=ratio("pub", "adam"),
    pub_over_floor=ratio("pub", "floor"),
    nash_over_adam=ratio("nash", "adam"),
    floor_over_adam=ratio("floor", "adam"),
    sparse_over_adam=ratio("pub_sparse", "adam"),
    sparse_over_floor=ratio("pub_sparse", "floor_sparse"),
    sparse_over_pub=ratio("pub_sparse", "pub"),
  )
  if "floor_balance" in names:
    row.update(
      pub_over_floor_balance=ratio("pub", "floor_balance"),
      floor_balance_over_floor=ratio("floor_balance", "floor"),
    )
  row["samples_s"] = samples
  row.update(gram_times(params, shared, num_tasks))
  return row


def gram_times(params, shared, num_tasks: int, repeats: int = 5) -> dict:
  """The Gram matrix of K random task vectors over the shared leaves, by each reduction.

  ``gram_{matmul,lanes,blocks}_s``: median seconds of the jitted reduction
  (``pub_optax._gram.leaf_gram``) summed over the shared leaves; ``gram_auto`` names the one
  the PUB step above runs (on CPU lanes for K <= 3 and blocks from K = 4, the matmul
  elsewhere; small leaves always take the matmul).
  """
  leaves = [p for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(shared)) if m]
  keys = jax.random.split(jax.random.key(1), len(leaves))
  stacked = [jax.random.normal(k, (num_tasks, p.size), jnp.float32) for k, p in zip(keys, leaves)]
  out = {}
  for reduction in ("matmul", "lanes", "blocks"):
    fn = jax.jit(lambda xs, r=reduction: sum(leaf_gram(x, r) for x in xs))
    out[f"gram_{reduction}_s"] = common.time_fn(fn, stacked, repeats=repeats, warmup=1)["median_s"]
  cpu = "lanes" if num_tasks <= _LANES_UP_TO_TASKS else "blocks"
  out["gram_auto"] = cpu if jax.default_backend() == "cpu" else "matmul"
  out["gram_matmul_over_auto"] = out["gram_matmul_s"] / out[f"gram_{out['gram_auto']}_s"]
  del stacked
  return out


GRAD_VARIANTS = ("vmap", "loop", "jacrev", "per_task_grad", "default")


def grad_variants(graph) -> dict[str, Callable]:
  """Ways to get the K per-task gradients of the model's task losses, each
  ``(params, rest, batch) -> (losses, new model state, task_grads)`` with task_grads
  leaves ``(K, *param_shape)``:

  * ``vmap`` — one forward, ``jax.vmap`` of the VJP over the rows of the K×K identity;
  * ``loop`` — one forward, the same ``vjp_fn`` called K times (a Python loop, one program);
  * ``jacrev`` — ``jax.jacrev`` of the task losses;
  * ``per_task_grad`` — K separate ``jax.grad`` of each task loss (K forwards);
  * ``default`` — ``pub_optax.value_and_task_grads`` as the PUB step calls it.
  """
  losses_fn = make_losses_fn(graph)

  def vjp(params, rest, batch):
    return jax.vjp(lambda p: losses_fn(p, rest, batch), params, has_aux=True)

  def vmapped(params, rest, batch):
    losses, vjp_fn, new_rest = vjp(params, rest, batch)
    (grads,) = jax.vmap(vjp_fn)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    return losses, new_rest, grads

  def loop(params, rest, batch):
    losses, vjp_fn, new_rest = vjp(params, rest, batch)
    eye = jnp.eye(losses.shape[0], dtype=losses.dtype)
    rows = [vjp_fn(eye[k])[0] for k in range(losses.shape[0])]
    return losses, new_rest, jax.tree.map(lambda *g: jnp.stack(g), *rows)

  def jacrev(params, rest, batch):
    def f(p):
      losses, new_rest = losses_fn(p, rest, batch)
      return losses, (losses, new_rest)

    grads, (losses, new_rest) = jax.jacrev(f, has_aux=True)(params)
    return losses, new_rest, grads

  def per_task_grad(params, rest, batch):
    rows = []
    for k in range(batch["labels"].shape[1]):

      def f(p, k=k):
        losses, new_rest = losses_fn(p, rest, batch)
        return losses[k], (losses, new_rest)

      grads, (losses, new_rest) = jax.grad(f, has_aux=True)(params)
      rows.append(grads)
    return losses, new_rest, jax.tree.map(lambda *g: jnp.stack(g), *rows)

  def default(params, rest, batch):
    (losses, new_rest), grads = pub_optax.value_and_task_grads(losses_fn, has_aux=True)(
      params, rest, batch
    )
    return losses, new_rest, grads

  return dict(vmap=vmapped, loop=loop, jacrev=jacrev, per_task_grad=per_task_grad, default=default)


class GradRunner:
  """One compiled per-task-gradient function, called on the same parameters each time."""

  def __init__(self, fn: Callable, params, rest, batches):
    start = time.perf_counter()
    self.compiled = jax.jit(fn).lower(params, rest, batches[0]).compile()
    self.compile_s = time.perf_counter() - start
    self.args = (params, rest)
    self.batches = batches
    self.calls = 0

  def __call__(self):
    batch = self.batches[self.calls % len(self.batches)]
    self.calls += 1
    return self.compiled(*self.args, batch)


def bench_grads(cfg: dict, embed_dim: int, num_tasks: int) -> dict:
  """The per-task-gradient variants beside Adam on the summed loss and the PUB step, interleaved.

  Each variant's gradients are checked against ``vmap`` (``max_abs_diff_*``, relative to the
  largest gradient entry) before timing. Ratios are medians of per-round ratios.
  """
  batches, cardinalities, n_numerical = make_batches(cfg, num_tasks)
  model = make_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim)
  graph, params, rest = split(model)
  sizes = [x.size for x in jax.tree.leaves(params)]
  row = dict(embed_dim=embed_dim, num_tasks=num_tasks, params_m=sum(sizes) / 1e6)
  methods = make_methods(
    graph, model.shared_mask(), num_tasks, cfg["lr"], model.embedding_lookups()
  )
  runners: dict[str, Callable] = {}
  for name in ("adam", "pub", "floor", "summed"):
    runners[name] = runner = Runner(methods[name], params, rest, batches, structure=False)
    jax.block_until_ready(runner())
    row[f"compile_{name}_s"] = runner.compile_s
  reference = None
  for name, fn in grad_variants(graph).items():
    runners[name] = runner = GradRunner(fn, params, rest, batches)
    losses, _, grads = jax.block_until_ready(runner())
    if not bool(jnp.all(jnp.isfinite(losses))):
      raise FloatingPointError(f"{name}: non-finite losses {losses}")
    row[f"compile_{name}_s"] = runner.compile_s
    leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]
    if reference is None:
      reference = leaves
      scale = max(float(np.max(np.abs(g))) for g in leaves)
    row[f"max_abs_diff_{name}"] = (
      max(float(np.max(np.abs(g - r))) for g, r in zip(leaves, reference)) / scale
    )
    del losses, grads, leaves
  names = tuple(runners)
  samples = {name: [] for name in names}
  start = time.perf_counter()
  for r in range(cfg["repeats"]):
    if r >= 3 and time.perf_counter() - start > cfg["time_budget_s"]:
      break
    for name in names[r % len(names) :] + names[: r % len(names)]:
      samples[name].append(common.time_fn(runners[name], repeats=1, warmup=0)["median_s"])
  row["rounds"] = len(samples["adam"])
  ratio = lambda a, b: statistics.median(x / y for x, y in zip(samples[a], samples[b]))
  for name in names:
    row[f"{name}_s"] = statistics.median(samples[name])
    if name != "adam":
      row[f"{name}_over_adam"] = ratio(name, "adam")
  for name in GRAD_VARIANTS:
    row[f"{name}_over_vmap"] = ratio(name, "vmap")
  for name in ("pub", "floor", "summed"):
    row[f"{name}_over_task_grads"] = ratio(name, "default")
  row["pub_over_floor"] = ratio("pub", "floor")
  row["samples_s"] = samples
  row.update(gram_times(params, resolve_shared(model.shared_mask(), params), num_tasks))
  return row


GRAD_COLUMNS = [
  ("embed_dim", "dim"),
  ("num_tasks", "K"),
  ("adam_s", "adam s", ".3f"),
  ("vmap_s", "vmap s", ".3f"),
  ("loop_s", "loop s", ".3f"),
  ("jacrev_s", "jacrev s", ".3f"),
  ("per_task_grad_s", "K grads s", ".3f"),
  ("default_s", "default s", ".3f"),
  ("pub_s", "pub s", ".3f"),
  ("floor_s", "floor s", ".3f"),
  ("summed_s", "summed s", ".3f"),
  ("vmap_over_adam", "vmap/adam", ".2f"),
  ("loop_over_adam", "loop/adam", ".2f"),
  ("jacrev_over_adam", "jacrev/adam", ".2f"),
  ("per_task_grad_over_adam", "K grads/adam", ".2f"),
  ("default_over_adam", "default/adam", ".2f"),
  ("loop_over_vmap", "loop/vmap", ".3f"),
  ("pub_over_task_grads", "pub/default", ".3f"),
  ("floor_over_task_grads", "floor/default", ".3f"),
  ("summed_over_task_grads", "summed/default", ".3f"),
  ("pub_over_floor", "pub/floor", ".3f"),
  ("rounds", "rounds"),
  ("gram_matmul_s", "gram matmul s", ".4f"),
  ("gram_lanes_s", "gram lanes s", ".4f"),
  ("gram_blocks_s", "gram blocks s", ".4f"),
]


COLUMNS = [
  ("embed_dim", "dim"),
  ("num_tasks", "K"),
  ("params_m", "params M", ".2f"),
  ("adam_s", "adam s", ".3f"),
  ("pub_s", "pub s", ".3f"),
  ("floor_s", "floor s", ".3f"),
  ("nash_s", "nash s", ".3f"),
  ("pub_over_adam", "(a) pub/adam", ".2f"),
  ("pub_over_floor", "(b) pub/floor", ".3f"),
  ("nash_over_adam", "(c) nash/adam", ".2f"),
  ("pub_sparse_s", "sparse s", ".3f"),
  ("sparse_over_adam", "sparse/adam", ".2f"),
  ("sparse_over_floor", "sparse/floor_sp", ".3f"),
  ("sparse_over_pub", "sparse/pub", ".2f"),
  ("mem_adam_mb", "mem adam MB", ".0f"),
  ("mem_pub_mb", "mem pub MB", ".0f"),
  ("mem_floor_mb", "mem floor MB", ".0f"),
  ("mem_nash_mb", "mem nash MB", ".0f"),
  ("mem_pub_sparse_mb", "mem sparse MB", ".0f"),
  ("rounds", "rounds"),
  ("gram_matmul_s", "gram matmul s", ".4f"),
  ("gram_lanes_s", "gram lanes s", ".4f"),
  ("gram_blocks_s", "gram blocks s", ".4f"),
]


def summarize(rows: list[dict]) -> dict:
  goal_rows = [r for r in rows if r["embed_dim"] == GOAL_EMBED_DIM] or rows
  at_two = [r["pub_over_adam"] for r in goal_rows if r["num_tasks"] == 2]
  return dict(
    pub_programs={f"dim={r['embed_dim']} K={r['num_tasks']}": r["programs"]["pub"] for r in rows},
    goal_embed_dim=goal_rows[0]["embed_dim"],
    max_pub_over_floor=max(r["pub_over_floor"] for r in goal_rows),
    floor_goal=FLOOR_GOAL,
    floor_goal_met=all(r["pub_over_floor"] <= FLOOR_GOAL for r in goal_rows),
    pub_over_adam_k2=at_two[0] if at_two else None,
    adam_goal=ADAM_GOAL,
    adam_goal_met=bool(at_two) and at_two[0] <= ADAM_GOAL,
    max_pub_over_floor_all_dims=max(r["pub_over_floor"] for r in rows),
    max_sparse_over_floor=max(r["sparse_over_floor"] for r in goal_rows),
    sparse_over_adam_k2=next(
      (r["sparse_over_adam"] for r in goal_rows if r["num_tasks"] == 2), None
    ),
  )


def report_grads(args, cfg: dict, rows: list[dict], info: dict, wall: float) -> int:
  """Prints the per-task-gradient table and writes the JSON (``benchmark="step_grads"``)."""
  print(
    f"\nPer-task gradients of the MMoE step ({info.get('jax_backend')}, {info['cpu_model']}, "
    f"{info['cpu_count']} cores); MMoE {cfg['n_experts']}x{cfg['expert_dims']}, towers "
    f"{cfg['tower_dims']}, batch {cfg['batch_size']}; seconds are medians, ratios medians of "
    "per-round ratios"
  )
  common.print_table(rows, GRAD_COLUMNS)
  diffs = {v: max(r[f"max_abs_diff_{v}"] for r in rows) for v in GRAD_VARIANTS}
  print("largest difference to vmap, relative to the largest gradient entry:", diffs)
  summary = dict(
    fastest={
      f"K={r['num_tasks']}": min(GRAD_VARIANTS[:4], key=lambda v: r[f"{v}_s"]) for r in rows
    },
    pub_over_task_grads={f"K={r['num_tasks']}": r["pub_over_task_grads"] for r in rows},
    max_abs_diff=diffs,
  )
  print(f"fastest: {summary['fastest']}; pub / its per-task gradients: ", end="")
  print({k: round(v, 3) for k, v in summary["pub_over_task_grads"].items()})
  print(f"wall time {wall:.1f}s")
  if args.json:
    common.write_json(
      args.json,
      dict(
        benchmark="step_grads", config=cfg, machine=info, summary=summary, rows=rows, wall_s=wall
      ),
    )
    print(f"wrote {args.json}")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick", action="store_true", help="small model, K = 2, few rounds (< 1 min)"
  )
  parser.add_argument(
    "--json", metavar="PATH", help="write every figure and the configuration here"
  )
  parser.add_argument(
    "--embed-dims", type=int, nargs="+", help="run the grid of these widths x --tasks"
  )
  parser.add_argument(
    "--tasks", type=int, nargs="+", help="run the grid of --embed-dims x these task counts"
  )
  parser.add_argument(
    "--rounds", type=int, help="time exactly this many rounds per configuration (no time budget)"
  )
  parser.add_argument(
    "--balance-floor",
    action="store_true",
    help="also time the dense floor built from balance (floor_balance)",
  )
  parser.add_argument(
    "--grads",
    action="store_true",
    help="time the ways of computing per-task gradients instead (embed dim 16, K = 2, 4, 8, "
    "batch 1024 unless --embed-dims/--tasks/--batch-size say otherwise)",
  )
  parser.add_argument("--batch-size", type=int, help="rows per batch")
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else FULL, quick=args.quick, balance_floor=args.balance_floor)
  # Compilation dominates at the quick sizes, whose figures check that the script runs, not
  # the speed: XLA's optimisation passes are skipped there (the lowered programs it reports
  # are taken before those passes either way).
  jax.config.update("jax_disable_most_optimizations", args.quick)
  if args.grads:
    cfg.update(GRADS_QUICK if args.quick else GRADS, grads=True)
  if args.batch_size:
    cfg["batch_size"] = args.batch_size
  if args.rounds:
    cfg.update(repeats=args.rounds, time_budget_s=float("inf"))
  if args.embed_dims or args.tasks:
    dims = args.embed_dims or sorted({d for d, _ in cfg["configs"]})
    tasks = args.tasks or sorted({k for _, k in cfg["configs"]})
    cfg["configs"] = tuple((d, k) for d in dims for k in tasks)

  start = time.perf_counter()
  rows = []
  for embed_dim, num_tasks in cfg["configs"]:
    t0 = time.perf_counter()
    rows.append((bench_grads if args.grads else bench_config)(cfg, embed_dim, num_tasks))
    print(
      f"dim={embed_dim} K={num_tasks}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True
    )
  info = common.machine_info(packages=("jax", "jaxlib", "numpy", "optax", "flax"))
  if args.grads:
    return report_grads(args, cfg, rows, info, time.perf_counter() - start)
  summary = summarize(rows)
  wall = time.perf_counter() - start
  print(
    f"\nPUB training step vs plain Adam, the floor and gradient-level Nash-MTL "
    f"({info.get('jax_backend')}, {info['cpu_model']}, {info['cpu_count']} cores); "
    f"MMoE {cfg['n_experts']}x{cfg['expert_dims']}, towers {cfg['tower_dims']}, batch {cfg['batch_size']}"
  )
  common.print_table(
    rows,
    COLUMNS
    + (
      [
        ("pub_over_floor_balance", "pub/floor_bal", ".3f"),
        ("floor_balance_over_floor", "floor_bal/floor", ".3f"),
      ]
      if args.balance_floor
      else []
    ),
  )
  print("memory: compiled memory_analysis, argument + output + temp - aliased (MB)")
  print(
    "\nlowered programs per platform (no device needed): stablehlo.while loops, "
    "stablehlo.case/if conditionals, custom-call targets"
  )
  for row in rows:
    for name, structure in row["programs"].items():
      print(
        f"  dim={row['embed_dim']} K={row['num_tasks']} {name:>13}: "
        + common.format_structure(structure)
      )
  print(
    f"\nat embed dim {summary['goal_embed_dim']}: (b) pub/floor <= {FLOOR_GOAL} for every K: "
    f"{summary['floor_goal_met']} (max {summary['max_pub_over_floor']:.3f}); (a) pub/adam <= {ADAM_GOAL} "
    f"at K=2: {summary['adam_goal_met']} ({summary['pub_over_adam_k2']})"
  )
  print(
    f"row-sparse embeddings: pub_sparse/floor_sparse max {summary['max_sparse_over_floor']:.3f}; "
    f"pub_sparse/adam at K=2: {summary['sparse_over_adam_k2']}"
  )
  print(f"wall time {wall:.1f}s")
  if args.json:
    common.write_json(
      args.json,
      dict(benchmark="step", config=cfg, machine=info, summary=summary, rows=rows, wall_s=wall),
    )
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
