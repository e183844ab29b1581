"""PUB's training step in PyTorch beside pub_optax's, on the same MMoE and data, in one run.

Model and data: the MMoE of ``benchmarks/step.py`` (16 categorical fields with tables of 10 to
100 000 ids, 63 numerical features, 8 experts of widths (512, 256), towers (128, 64), BatchNorm,
dropout 0.2) at embedding width 16, batch 1024, K = 2, 4, 8 tasks (labels as in ``step.py``),
built once in Flax NNX and once in PyTorch with the same layer sizes. Embedding gradients are
dense in both. ``--quick``: the small MMoE of ``step.py --quick`` at width 8, K = 2.

Steps compared (each one training step: forward, gradients, update):

* ``torch_adam`` — ``torch.optim.Adam`` (foreach) on the summed loss.
* ``torch_pub`` — PUB as the paper's public code runs it: K ``torch.autograd.grad`` calls (one
  backward each, the graph retained), K Adam look-aheads on the shared parameters, the Gram
  matrix of the flattened look-ahead updates, the Nash-MTL concave-convex procedure in cvxpy
  (its original, non-DPP problem re-built every solve, its stop rule, warm-started from the last
  step's weights; ECOS when installed, else Clarabel) capped at ``ccp_max_iter`` solves per
  step, weights normalised to sum to 1, shared parameters moved by ``Σ α̂_k d_k`` and the Adam
  state advanced once with ``Σ α̂_k g_k``; task-specific parameters take Adam on ``Σ_k g_k``.
* ``torchjd_nash`` — TorchJD's Nash-MTL (``torchjd.aggregation.NashMTL``, cvxpy + ECOS): the
  Jacobian of the shared parameters by ``torchjd.autojac.backward`` (K batched backward passes),
  aggregated by ``jac_to_grad``, the task-specific parameters by the summed loss, then
  ``torch.optim.Adam``: gradient-level Nash-MTL, the nearest published PyTorch implementation. Reported as "not installed" without torchjd/ECOS.
* ``jax_pub`` — ``pub_optax.pub_adam`` on ``value_and_task_grads``, one jitted step with the
  state donated (``step.py``'s ``pub``).
* ``jax_adam`` — ``optax.adam`` on the summed loss, jitted (``step.py``'s ``adam``).

Timing: every step runs once untimed, then ``repeats`` rounds in which every variant takes one
step, the order rotating from round to round. Reported: median seconds per step and ratios to
``torch_pub`` (medians of per-round ratios).

Usage (from the repository root; ``pip install ".[bench]"``):
  python benchmarks/torch_step.py [--quick] [--tasks 2 4 8] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

try:  # python -m benchmarks.torch_step
  from benchmarks import common, step
except ImportError:  # python benchmarks/torch_step.py
  import common  # type: ignore[no-redef]
  import step  # type: ignore[no-redef]

import torch
from torch import nn
from torch.nn import functional as F

from pub_optax.ranking.models import split
from pub_optax.testing.nash_ccp import NASH_MTL_SOLVER_MAX_ITERS, NashCCP

CONFIG = dict(
  step.FULL, configs=((16, 2), (16, 4), (16, 8)), batch_size=1024, n_batches=2, repeats=5
)
QUICK = dict(step.QUICK, configs=((8, 2),), repeats=3)
CCP_MAX_ITER = 5
VARIANTS = ("torch_adam", "torch_pub", "torchjd_nash", "jax_pub", "jax_adam")


def _mlp(in_dim: int, dims, dropout: float) -> nn.Sequential:
  layers: list[nn.Module] = []
  for width in dims:
    layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width, momentum=0.1, eps=1e-5), nn.ReLU()]
    if dropout > 0:
      layers.append(nn.Dropout(dropout))
    in_dim = width
  return nn.Sequential(*layers)


class TorchMMoE(nn.Module):
  """The MMoE of ``pub_optax.ranking.models.MMoE`` in PyTorch: same layers, same widths.

  Shared: embedding tables, the dense projection and the experts; task-specific: the gates and
  towers.

  Example:
    >>> m = TorchMMoE((5, 7), 3, 2, embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,))
    >>> m(torch.zeros(6, 2, dtype=torch.long), torch.ones(6, 3)).shape
    torch.Size([6, 2])
  """

  def __init__(
    self, cardinalities, n_numerical, n_tasks, *, embed_dim, n_experts, expert_dims, tower_dims
  ):
    super().__init__()
    self.tables = nn.ModuleList(nn.Embedding(int(c), embed_dim) for c in cardinalities)
    self.dense = nn.Linear(n_numerical, embed_dim)
    d_in = (len(cardinalities) + 1) * embed_dim
    self.experts = nn.ModuleList(_mlp(d_in, expert_dims, 0.2) for _ in range(n_experts))
    self.gates = nn.ModuleList(nn.Linear(d_in, n_experts) for _ in range(n_tasks))
    self.towers = nn.ModuleList(
      nn.Sequential(_mlp(expert_dims[-1], tower_dims, 0.2), nn.Linear(tower_dims[-1], 1))
      for _ in range(n_tasks)
    )

  def shared_parameters(self) -> list[nn.Parameter]:
    return [*self.tables.parameters(), *self.dense.parameters(), *self.experts.parameters()]

  def task_parameters(self) -> list[nn.Parameter]:
    return [*self.gates.parameters(), *self.towers.parameters()]

  def features(self, categorical, numerical):
    parts = [table(categorical[:, f]) for f, table in enumerate(self.tables)]
    return torch.cat(parts + [self.dense(numerical)], dim=-1)

  def heads(self, x, experts):
    outs = []
    for gate, tower in zip(self.gates, self.towers):
      weights = torch.softmax(gate(x), dim=-1)
      outs.append(tower(torch.einsum("be,bed->bd", weights, experts)))
    return torch.cat(outs, dim=-1)

  def forward(self, categorical, numerical):
    x = self.features(categorical, numerical)
    return self.heads(x, torch.stack([expert(x) for expert in self.experts], dim=1))


def task_losses(logits, labels):
  """Mean binary cross-entropy per task: ``(B, K)`` -> ``(K,)``."""
  return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)


class PaperPUB:
  """One PUB step as the paper's public code designs it (see the module doc)."""

  def __init__(self, model: TorchMMoE, num_tasks: int, lr: float, ccp: NashCCP):
    self.model, self.k, self.lr, self.ccp = model, num_tasks, lr, ccp
    self.shared, self.specific = model.shared_parameters(), model.task_parameters()
    self.params = self.shared + self.specific
    self.m = [torch.zeros_like(p) for p in self.params]
    self.v = [torch.zeros_like(p) for p in self.params]
    self.t = 0
    self.alpha = None  # warm start of the solve
    self.iterations: list[int] = []

  @torch.no_grad()
  def _adam(self, grads, m, v, bc1, bc2, commit: bool):
    """Adam direction ``m̂ / (√v̂ + ε)`` for ``grads``; updates ``m``, ``v`` in place if ``commit``."""
    if commit:
      torch._foreach_lerp_(m, grads, 0.1)
      torch._foreach_mul_(v, 0.999)
      torch._foreach_addcmul_(v, grads, grads, value=0.001)
      new_m, new_v = m, v
    else:
      new_m = torch._foreach_lerp(m, grads, 0.1)
      new_v = torch._foreach_mul(v, 0.999)
      torch._foreach_addcmul_(new_v, grads, grads, value=0.001)
    denom = torch._foreach_sqrt(torch._foreach_div(new_v, bc2))
    torch._foreach_add_(denom, 1e-8)
    return torch._foreach_div(torch._foreach_div(new_m, bc1), denom)

  def __call__(self, categorical, numerical, labels):
    losses = task_losses(self.model(categorical, numerical), labels)
    grads = [
      torch.autograd.grad(losses[k], self.params, retain_graph=k < self.k - 1)
      for k in range(self.k)
    ]
    self.t += 1
    bc1, bc2 = 1 - 0.9**self.t, 1 - 0.999**self.t
    ns = len(self.shared)
    m_s, v_s = self.m[:ns], self.v[:ns]
    with torch.no_grad():
      looks = [self._adam(list(g[:ns]), m_s, v_s, bc1, bc2, commit=False) for g in grads]
      flat = torch.stack([torch.cat([d.reshape(-1) for d in look]) for look in looks])
      gram = (flat @ flat.T).double().numpy()
      result = self.ccp.solve(gram, init=self.alpha)
      self.iterations.append(result.iterations)
      self.alpha = result.weights
      alpha = torch.as_tensor(result.weights / result.weights.sum(), dtype=torch.float32)
      direction = [sum(a * d[i] for a, d in zip(alpha, looks)) for i in range(ns)]
      weighted = [sum(a * g[i] for a, g in zip(alpha, grads)) for i in range(ns)]
      self._adam(weighted, m_s, v_s, bc1, bc2, commit=True)
      torch._foreach_add_(self.shared, direction, alpha=-self.lr)
      summed = [sum(g[ns + i] for g in grads) for i in range(len(self.specific))]
      update = self._adam(summed, self.m[ns:], self.v[ns:], bc1, bc2, commit=True)
      torch._foreach_add_(self.specific, update, alpha=-self.lr)
    return losses.detach()


def torch_adam_step(model: TorchMMoE, lr: float) -> Callable:
  opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)

  def run(categorical, numerical, labels):
    opt.zero_grad(set_to_none=True)
    losses = task_losses(model(categorical, numerical), labels)
    losses.sum().backward()
    opt.step()
    return losses.detach()

  return run


def torchjd_nash_step(model: TorchMMoE, num_tasks: int, lr: float) -> Callable | str:
  """TorchJD's gradient-level Nash-MTL step, or the reason it cannot run."""
  try:
    from torchjd.aggregation import NashMTL
    from torchjd.autojac import backward, jac_to_grad

    aggregator = NashMTL(n_tasks=num_tasks)
  except ImportError as err:
    return f"not installed ({err})"
  opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
  shared, specific = model.shared_parameters(), model.task_parameters()

  def run(categorical, numerical, labels):
    opt.zero_grad(set_to_none=True)
    losses = task_losses(model(categorical, numerical), labels)
    # The K x P Jacobian of the shared parameters (TorchJD batches the K backward passes),
    # aggregated by Nash-MTL into their .grad; the task-specific ones take the summed loss.
    backward(losses, inputs=shared, retain_graph=True)
    jac_to_grad(shared, aggregator)
    losses.sum().backward(inputs=specific)
    opt.step()
    return losses.detach()

  return run


def torch_model(cfg: dict, cardinalities, n_numerical: int, num_tasks: int, embed_dim: int):
  torch.manual_seed(0)
  return TorchMMoE(
    cardinalities,
    n_numerical,
    num_tasks,
    embed_dim=embed_dim,
    n_experts=cfg["n_experts"],
    expert_dims=cfg["expert_dims"],
    tower_dims=cfg["tower_dims"],
  ).train()


class TorchRunner:
  def __init__(self, fn: Callable, batches):
    self.fn, self.calls = fn, 0
    self.batches = [
      tuple(
        torch.as_tensor(np.array(b[key]), dtype=dtype)
        for key, dtype in (
          ("categorical", torch.long),
          ("numerical", torch.float32),
          ("labels", torch.float32),
        )
      )
      for b in batches
    ]

  def __call__(self):
    batch = self.batches[self.calls % len(self.batches)]
    self.calls += 1
    return self.fn(*batch)


def bench(cfg: dict, embed_dim: int, num_tasks: int, solver: str) -> dict:
  batches, cardinalities, n_numerical = step.make_batches(cfg, num_tasks)
  row: dict = dict(embed_dim=embed_dim, num_tasks=num_tasks)
  runners: dict[str, Callable] = {}

  ccp = NashCCP(
    num_tasks,
    objective="nash_mtl",
    parameterized=False,
    max_iter=CCP_MAX_ITER,
    stop_rule="nash_mtl",
    trust_region=None,
    solver=solver,
    solver_options={"max_iters" if solver == "ECOS" else "max_iter": NASH_MTL_SOLVER_MAX_ITERS},
  )
  paper = PaperPUB(
    torch_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim), num_tasks, cfg["lr"], ccp
  )
  row["params_m"] = sum(p.numel() for p in paper.params) / 1e6
  runners["torch_adam"] = TorchRunner(
    torch_adam_step(torch_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim), cfg["lr"]),
    batches,
  )
  runners["torch_pub"] = TorchRunner(paper, batches)
  jd = torchjd_nash_step(
    torch_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim), num_tasks, cfg["lr"]
  )
  if isinstance(jd, str):
    row["torchjd_nash"] = jd
  else:
    runners["torchjd_nash"] = TorchRunner(jd, batches)

  model = step.make_model(cfg, cardinalities, n_numerical, num_tasks, embed_dim)
  graph, params, rest = split(model)
  row["jax_params_m"] = sum(x.size for x in jax.tree.leaves(params)) / 1e6
  methods = step.make_methods(
    graph, model.shared_mask(), num_tasks, cfg["lr"], model.embedding_lookups()
  )
  for name, method in (("jax_pub", "pub"), ("jax_adam", "adam")):
    runners[name] = step.Runner(methods[method], params, rest, batches, structure=False)

  for name, runner in runners.items():
    losses = runner()  # first, untimed step (compiles the JAX steps)
    jax.block_until_ready(losses)
    if not np.all(np.isfinite(np.asarray(losses))):
      raise FloatingPointError(f"{name}: non-finite losses {losses}")
  names = tuple(runners)
  samples = {name: [] for name in names}
  for r in range(cfg["repeats"]):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      samples[name].append(common.time_fn(runners[name], repeats=1, warmup=0)["median_s"])
  row["rounds"] = cfg["repeats"]
  ratio = lambda a, b: statistics.median(x / y for x, y in zip(samples[a], samples[b]))
  for name in names:
    row[f"{name}_s"] = statistics.median(samples[name])
    row[f"torch_pub_over_{name}"] = ratio("torch_pub", name)
  row["torch_pub_ccp_iterations_mean"] = float(np.mean(paper.iterations))
  row["samples_s"] = samples
  return row


COLUMNS = [
  ("embed_dim", "dim"),
  ("num_tasks", "K"),
  ("params_m", "params M", ".2f"),
  ("torch_adam_s", "torch adam s", ".3f"),
  ("torch_pub_s", "torch PUB (paper) s", ".3f"),
  ("torchjd_nash_s", "TorchJD Nash-MTL s", ".3f"),
  ("jax_pub_s", "pub_optax PUB s", ".3f"),
  ("jax_adam_s", "optax adam s", ".3f"),
  ("torch_pub_over_jax_pub", "paper PUB / pub_optax PUB", ".2f"),
  ("torch_pub_over_torch_adam", "paper PUB / torch adam", ".2f"),
  ("torch_pub_over_torchjd_nash", "paper PUB / TorchJD", ".2f"),
  ("torch_pub_ccp_iterations_mean", "CCP solves/step", ".1f"),
  ("rounds", "rounds"),
]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small MMoE, K = 2, 3 rounds")
  parser.add_argument("--json", metavar="PATH", help="write every figure and the configuration")
  parser.add_argument("--tasks", type=int, nargs="+", help="task counts (embed dim from config)")
  parser.add_argument("--rounds", type=int, help="timed rounds per configuration")
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else CONFIG, quick=args.quick, ccp_max_iter=CCP_MAX_ITER)
  if args.tasks:
    cfg["configs"] = tuple((cfg["configs"][0][0], k) for k in args.tasks)
  if args.rounds:
    cfg["repeats"] = args.rounds
  import cvxpy as cp

  solver = "ECOS" if "ECOS" in cp.installed_solvers() else "CLARABEL"
  cfg.update(solver=solver, torch_threads=torch.get_num_threads())
  start = time.perf_counter()
  rows = []
  for embed_dim, num_tasks in cfg["configs"]:
    t0 = time.perf_counter()
    rows.append(bench(cfg, embed_dim, num_tasks, solver))
    print(f"dim={embed_dim} K={num_tasks}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    row = rows[-1]
    print(
      f"  paper PUB {row['torch_pub_s']:.3f}s, pub_optax PUB {row['jax_pub_s']:.3f}s, "
      f"ratio {row['torch_pub_over_jax_pub']:.2f}",
      file=sys.stderr,
      flush=True,
    )
    if args.json:  # the configurations done so far, in case a later one is interrupted
      common.write_json(
        args.json, dict(benchmark="torch_step", config=cfg, rows=rows, partial=True)
      )
  packages = ("jax", "jaxlib", "optax", "flax", "torch", "torchjd", "cvxpy", "ecos", "numpy")
  info = common.machine_info(packages=packages)
  wall = time.perf_counter() - start
  print(
    f"\nOne MMoE training step: the paper's PUB design in PyTorch vs pub_optax "
    f"({info['cpu_model']}, {info['cpu_count']} cores, torch threads {cfg['torch_threads']}); "
    f"MMoE {cfg['n_experts']}x{cfg['expert_dims']}, towers {cfg['tower_dims']}, batch "
    f"{cfg['batch_size']}; cvxpy solver {solver}, at most {CCP_MAX_ITER} CCP solves per step"
  )
  common.print_table(rows, COLUMNS)
  for row in rows:
    if isinstance(row.get("torchjd_nash"), str):
      print(f"K={row['num_tasks']} TorchJD Nash-MTL: {row['torchjd_nash']}")
  speedups = [r["torch_pub_over_jax_pub"] for r in rows]
  summary = dict(
    min_speedup_over_paper=min(speedups),
    speedup_goal=4.0,
    speedup_goal_met=min(speedups) >= 4.0,
  )
  print(f"pub_optax PUB vs the paper's design: min speed-up {min(speedups):.2f}x (goal >= 4x)")
  print(f"wall time {wall:.1f}s")
  if args.json:
    common.write_json(
      args.json,
      dict(
        benchmark="torch_step", config=cfg, machine=info, summary=summary, rows=rows, wall_s=wall
      ),
    )
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
