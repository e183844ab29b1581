"""A registry of every multi-task method in pub_optax, built by name with one call.

``make_method(name, learning_rate, num_tasks=K, shared=..., **hyper)`` returns an
``optax.GradientTransformationExtraArgs`` whose ``update(task_grads, state,
params, task_losses=None)`` takes per-task gradients stacked as
``(K, *param_shape)`` and returns one params-shaped update. Every method is one
of three kinds, all built on :func:`pub_optax.balance`:

* gradient level (``"equal"``, ``"nash_mtl"``, ``"mgda"``, ``"imtl_g"``,
  ``"upgrad"``, ``"pcgrad"``, ``"cagrad"``, ``"aligned_mtl"``, ``"rlw"``,
  ``"uncertainty"``, ``"famo"``): weights from the Gram matrix of the gradients
  (or from the losses), the joint gradient ``Σ w_k g_k`` on shared leaves feeds
  Adam (``optax.scale_by_adam``), weights as the method defines them
  (``scaling="raw"``);
* update level (``"pub"`` (default scaling), ``"pub_rms"``, ``"pub_raw"``,
  ``"pub_convex"``, ``"pub_adatask"``, ``"pub_clippy"``, ``"adatask"``): weights on
  the inner optimizer's per-task updates; ``"pub_fixed"`` is a control (weights stuck at 1, as the public PUB
  code effectively runs);
* ``"clippy_adam"``: Clippy-Adam on the summed gradient.

Common hyper-parameters: ``b1``, ``b2``, ``eps`` (Adam), ``weight_decay``
(decoupled, applied once per step), ``weight_decay_mask``, and ``refresh_every``
for methods that solve for weights. Method-specific ones are listed in
:data:`METHODS`. A hyper-parameter a method does not take raises ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import optax

from pub_optax._balance import SharedSpec, balance
from pub_optax._losses import famo, uncertainty
from pub_optax._manipulation import adatask, scale_by_clippy_adam
from pub_optax._pub import pub
from pub_optax.weightings._aligned import aligned_mtl
from pub_optax.weightings._base import Weighting
from pub_optax.weightings._cagrad import cagrad
from pub_optax.weightings._config import config
from pub_optax.weightings._cr_mogm import cr_mogm
from pub_optax.weightings._db_mtl import db_mtl
from pub_optax.weightings._dualproj import dualproj
from pub_optax.weightings._dwa import dwa
from pub_optax.weightings._excess_mtl import excess_mtl
from pub_optax.weightings._fairgrad import fairgrad
from pub_optax.weightings._geometric import geometric_mean
from pub_optax.weightings._graddrop import graddrop
from pub_optax.weightings._gradnorm import gradnorm
from pub_optax.weightings._gradvac import gradvac
from pub_optax.weightings._imtl import imtl_g
from pub_optax.weightings._imtl_hybrid import imtl
from pub_optax.weightings._imtl_l import imtl_l
from pub_optax.weightings._krum import krum
from pub_optax.weightings._mgda import mgda
from pub_optax.weightings._moco import moco
from pub_optax.weightings._modo import modo
from pub_optax.weightings._nash import nash
from pub_optax.weightings._pbi import pbi
from pub_optax.weightings._pcd import pcd
from pub_optax.weightings._pcgrad import pcgrad
from pub_optax.weightings._sdmgrad import sdmgrad
from pub_optax.weightings._simple import equal, ones, rlw
from pub_optax.weightings._stch import stch
from pub_optax.weightings._trimmed_mean import trimmed_mean
from pub_optax.weightings._upgrad import upgrad


class MethodInfo(NamedTuple):
  """One entry of :data:`METHODS`.

  Attributes:
    description: one line on what the method does.
    reference: the paper it comes from.
    needs_losses: True when ``update`` must receive ``task_losses=``.
    level: ``"gradient"``, ``"update"`` or ``"loss"`` (weights from the losses,
      applied to the gradients).
    hyper: the method's own hyper-parameters with their defaults.
    row_sparse: whether the method takes :class:`~pub_optax.RowSparse` table
      gradients and gives the dense result (its inner optimizer is coordinate-wise
      and keeps one state). False for the AdaTask methods (K inner states, refused),
      the Clippy methods (per-tensor clipping: not exact on table rows) and the
      coordinate-wise rules (GradDrop, trimmed mean, ...: refused).
  """

  description: str
  reference: str
  needs_losses: bool
  level: str
  hyper: dict
  row_sparse: bool = True


# ----------------------------------------------------------------------------- builders
# Every builder is ``build(learning_rate, num_tasks, shared, h)`` with ``h`` the method's full
# hyper-parameters: the Adam and weight-decay ones below, shared by every method, plus the
# method's own (declared at registration with their defaults).

_COMMON = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "weight_decay_mask": None}
_REFRESH = {"refresh_every": 1}
_CLIP = {"lambda_rel": 0.5, "lambda_abs": 1e-2}


def _adam(h):
  return optax.scale_by_adam(h["b1"], h["b2"], h["eps"])


def _clippy(learning_rate, h):
  return scale_by_clippy_adam(
    learning_rate, h["b1"], h["b2"], h["eps"], h["lambda_rel"], h["lambda_abs"]
  )


def _decay(h):
  return {"weight_decay": h["weight_decay"], "weight_decay_mask": h["weight_decay_mask"]}


def _on_gradients(weighting: Weighting, inner=None, **options):
  """Weights from the gradients; their weighted sum feeds Adam (or ``inner``)."""

  def build(learning_rate, num_tasks, shared, h):
    return balance(
      _adam(h) if inner is None else inner(learning_rate, h),
      weighting if isinstance(weighting, Weighting) else weighting(h),
      learning_rate,
      num_tasks=num_tasks,
      level="gradient",
      shared=shared,
      refresh_every=h.get("refresh_every", 1),
      scaling="raw",
      **options,
      **_decay(h),
    )

  return build


def _on_updates(scaling=None, per_task_state=False, inner=None, **options):
  """PUB: Nash weights on the inner optimizer's per-task updates (``options`` go to ``pub``)."""

  def build(learning_rate, num_tasks, shared, h):
    return pub(
      _adam(h) if inner is None else inner(learning_rate, h),
      learning_rate,
      num_tasks=num_tasks,
      shared=shared,
      refresh_every=h["refresh_every"],
      scaling=scaling,
      per_task_state=per_task_state,
      **options,
      **_decay(h),
    )

  return build


def _build_pub_fixed(learning_rate, num_tasks, shared, h):
  # Control: the public PUB code's effective behaviour (its solver fails silently, so the
  # weights stay 1): shared leaves move by -lr * sum_k d_k, the K Adam look-ahead updates.
  return balance(
    _adam(h),
    ones(),
    learning_rate,
    num_tasks=num_tasks,
    level="update",
    shared=shared,
    scaling="raw",
    **_decay(h),
  )


def _build_adatask(learning_rate, num_tasks, shared, h):
  return adatask(
    learning_rate, h["b1"], h["b2"], h["eps"], num_tasks=num_tasks, shared=shared, **_decay(h)
  )


def _uncertainty(learning_rate):
  def make(h):
    rate = learning_rate if h["weight_learning_rate"] is None else h["weight_learning_rate"]
    return uncertainty(rate, init=h["init_log_var"], b1=h["b1"], b2=h["b2"], eps=h["eps"])

  return make


def _build_imtl(learning_rate, num_tasks, shared, h):
  rate = learning_rate if h["weight_learning_rate"] is None else h["weight_learning_rate"]
  return _on_gradients(imtl(rate))(learning_rate, num_tasks, shared, h)


def _build_imtl_l(learning_rate, num_tasks, shared, h):
  rate = learning_rate if h["weight_learning_rate"] is None else h["weight_learning_rate"]
  weighting = imtl_l(rate, init=h["init_log_scale"])
  return _on_gradients(weighting)(learning_rate, num_tasks, shared, h)


def _build_uncertainty(learning_rate, num_tasks, shared, h):
  return _on_gradients(_uncertainty(learning_rate))(learning_rate, num_tasks, shared, h)


_NAV = "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022"
_PUB = "Yuan, Cai & Dong, A Parameter Update Balancing Algorithm for Multi-task Ranking Models in Recommendation Systems, arXiv 2410.05806"
_CLIPPY = "Tang et al., Improving Training Stability for Multitask Ranking Models in Recommender Systems, KDD 2023"
_ADATASK = "Yang et al., AdaTask: A Task-Aware Adaptive Learning Rate Approach to Multi-Task Learning, AAAI 2023"

_REGISTRY: dict[str, tuple[MethodInfo, Callable[..., Any]]] = {}


def _register(name, build, description, reference, level, hyper=(), **flags):
  """Registers ``build`` with the common hyper-parameters and the method's own ``hyper``."""
  info = MethodInfo(description, reference, flags.get("needs_losses", False), level,
                    {**_COMMON, **dict(hyper)}, flags.get("row_sparse", True))  # fmt: skip
  _REGISTRY[name] = (info, build)


_register("equal", _on_gradients(equal()), "Adam on the mean of the task losses (equal weights 1/K)", "linear scalarisation baseline", "gradient")  # fmt: skip
_register("pub", _on_updates(), "PUB: Nash bargaining over per-task Adam updates, weights summing to 1 (default)", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_rms", _on_updates("rms"), "PUB with the Nash direction rescaled to unit RMS per shared coordinate", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_raw", _on_updates("raw"), "PUB with the raw Nash weights (the published scaling)", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_convex", _on_updates("convex"), "PUB with Nash weights normalised to sum to 1", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_adatask", _on_updates(per_task_state=True), "PUB over AdaTask's per-task Adam updates (one Adam state per task)", f"{_PUB}; {_ADATASK}", "update", _REFRESH, row_sparse=False)  # fmt: skip
_register("pub_clippy", _on_updates(inner=_clippy, exact_on_rows=False), "PUB over per-task Clippy-Adam updates", f"{_PUB}; {_CLIPPY}", "update", {**_REFRESH, **_CLIP}, row_sparse=False)  # fmt: skip
_register("pub_fresh", _on_updates(lookahead="fresh"), "PUB with Nash weights from the fresh part of each look-ahead (minus the committed state's zero-gradient step), weights summing to 1", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_rms_convex_state", _on_updates("rms", commit="convex"), "PUB with an Adam-sized (unit RMS) Nash step whose committed state uses weights summing to 1", _PUB, "update", _REFRESH)  # fmt: skip
_register("pub_fixed", _build_pub_fixed, "control: PUB with the task weights stuck at 1, as the public code runs", _PUB, "update")  # fmt: skip
_register("nash_mtl", _on_gradients(nash()), "Nash-MTL: Nash bargaining weights α_k(Gα)_k = 1 on the task gradients", _NAV, "gradient", _REFRESH)  # fmt: skip
_register("mgda", _on_gradients(mgda()), "MGDA: min-norm convex combination of the task gradients", "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018", "gradient", _REFRESH)  # fmt: skip
_register("imtl_g", _on_gradients(imtl_g()), "IMTL-G: equal projections of the joint gradient onto every task gradient", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021", "gradient", _REFRESH)  # fmt: skip
_register("upgrad", _on_gradients(upgrad()), "UPGrad: mean of the projections of each gradient onto the dual cone", "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, arXiv 2406.16232", "gradient", _REFRESH)  # fmt: skip
_register("pcgrad", _on_gradients(lambda h: pcgrad(h["seed"])), "PCGrad: project away conflicting components in random order", "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020", "gradient", {**_REFRESH, "seed": 0})  # fmt: skip
_register("cagrad", _on_gradients(lambda h: cagrad(h["c"], rescale=h["rescale"])), "CAGrad: maximise the worst task improvement in a ball around the mean gradient", "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021", "gradient", {**_REFRESH, "c": 0.4, "rescale": True})  # fmt: skip
_register("aligned_mtl", _on_gradients(aligned_mtl()), "Aligned-MTL: align task gradients to an orthogonal, equally scaled system", "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023", "gradient", _REFRESH)  # fmt: skip
_register("rlw", _on_gradients(lambda h: rlw(h["seed"])), "RLW: random softmax-of-Gaussian task weights at every step", "Lin et al., Reasonable Effectiveness of Random Weighting, TMLR 2022", "gradient", {"seed": 0})  # fmt: skip
_register("uncertainty", _build_uncertainty, "Uncertainty weighting: weights exp(-s_k), log-variances learned on Σ exp(-s)L + s", "Kendall, Gal & Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses, CVPR 2018", "loss", {"weight_learning_rate": None, "init_log_var": 0.0}, needs_losses=True)  # fmt: skip
_register("famo", _on_gradients(lambda h: famo(h["weight_learning_rate"], gamma=h["gamma"], min_losses=h["min_losses"])), "FAMO: loss weights from logits adapted to the log-loss decrease", "Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023", "loss", {"weight_learning_rate": 0.025, "gamma": 0.01, "min_losses": 0.0}, needs_losses=True)  # fmt: skip
_register("fairgrad", _on_gradients(lambda h: fairgrad(h["alpha"])), "FairGrad: alpha-fair task weights G w = w^(-1/alpha) (alpha = 1 is Nash-MTL)", "Ban & Ji, Fair Resource Allocation in Multi-Task Learning, ICML 2024", "gradient", {**_REFRESH, "alpha": 1.0})  # fmt: skip
_register("dualproj", _on_gradients(dualproj()), "DualProj: projection of the mean gradient onto the dual cone of the task gradients", "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, arXiv 2406.16232", "gradient", _REFRESH)  # fmt: skip
_register("config", _on_gradients(config()), "ConFIG: direction with equal cosine to every task gradient, scaled by their total projection", "Liu, Chu & Thuerey, ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks, ICLR 2025", "gradient", _REFRESH)  # fmt: skip
_register("krum", _on_gradients(lambda h: krum(h["n_byzantine"], h["n_selected"])), "Krum / Multi-Krum: mean of the m task gradients closest to their K-f-2 nearest neighbours (K >= 2f + 3)", "Blanchard et al., Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent, NeurIPS 2017", "gradient", {**_REFRESH, "n_byzantine": 0, "n_selected": 1})  # fmt: skip
_register("cr_mogm", _on_gradients(lambda h: cr_mogm(h["beta"])), "CR-MOGM: MGDA weights exponentially averaged over steps", "Zhou et al., On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond, NeurIPS 2022", "gradient", {**_REFRESH, "beta": 0.9})  # fmt: skip
_register("gradvac", _on_gradients(lambda h: gradvac(h["beta"], h["seed"])), "GradVac: raise each pair's gradient cosine to an EMA target, in random order", "Wang et al., Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively Multilingual Models, ICLR 2021", "gradient", {**_REFRESH, "beta": 0.01, "seed": 0})  # fmt: skip
_register("sdmgrad", _on_gradients(lambda h: sdmgrad(h["lamda"], h["niter"])), "SDMGrad: min-norm weights regularised towards the mean gradient, by projected SGD", "Xiao, Ban & Ji, Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms, NeurIPS 2023", "gradient", {**_REFRESH, "lamda": 0.3, "niter": 20})  # fmt: skip
_register("db_mtl", _on_gradients(lambda h: db_mtl(h["beta"], h["beta_sigma"])), "DB-MTL: log-loss scaling, then gradient magnitudes balanced to the largest (EMA of norms)", "Lin et al., Dual-Balancing for Multi-Task Learning, arXiv 2308.12029", "gradient", {"beta": 0.9, "beta_sigma": 0.0}, needs_losses=True)  # fmt: skip
_register("gradnorm", _on_gradients(lambda h: gradnorm(h["alpha"], h["weight_learning_rate"])), "GradNorm: learned weights equalising weighted gradient norms, adjusted by training rates", "Chen et al., GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks, ICML 2018", "gradient", {"alpha": 1.5, "weight_learning_rate": 0.025}, needs_losses=True)  # fmt: skip
_register("imtl", _build_imtl, "IMTL: learned loss scales (IMTL-L) with IMTL-G weights on the scaled gradients", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021", "gradient", {"weight_learning_rate": None}, needs_losses=True)  # fmt: skip
_register("dwa", _on_gradients(lambda h: dwa(h["temperature"], period=h["period"])), "DWA: weights K·softmax(r/T), r the ratio of the last two period-average losses", "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019", "loss", {"temperature": 2.0, "period": 1}, needs_losses=True)  # fmt: skip
_register("imtl_l", _build_imtl_l, "IMTL-L: weights e^s_k, log-scales learned on Σ e^s L − s (weights -> 1/L)", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021", "loss", {"weight_learning_rate": None, "init_log_scale": 0.0}, needs_losses=True)  # fmt: skip
_register("stch", _on_gradients(lambda h: stch(h["mu"], preference=h["preference"], ideal=h["ideal"])), "STCH: weights p∘softmax(p∘(L−z)/μ), the loss-gradient of the smooth Tchebycheff scalarisation", "Lin et al., Smooth Tchebycheff Scalarization for Multi-Objective Optimization, ICML 2024", "loss", {"mu": 1.0, "preference": None, "ideal": None}, needs_losses=True)  # fmt: skip
_register("pbi", _on_gradients(lambda h: pbi(h["theta"], preference=h["preference"], ideal=h["ideal"])), "PBI: weights p̂ + θ r/‖r‖, the loss-gradient of d1 + θ d2 about a preference ray", "Zhang & Li, MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition, IEEE TEC 2007", "loss", {"theta": 5.0, "preference": None, "ideal": None}, needs_losses=True)  # fmt: skip
_register("geometric_mean", _on_gradients(geometric_mean()), "Geometric mean (GLS): weights (Π L)^{1/K}/(K L_k), the loss-gradient of (Π L)^{1/K}; positive losses", "Chennupati et al., MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning, CVPR Workshops 2019", "loss", needs_losses=True)  # fmt: skip
_register("graddrop", _on_gradients(lambda h: graddrop(h["leak"], h["seed"])), "GradDrop: per coordinate, keep only the task entries of one sign, positive with probability (1 + Σg/Σ|g|)/2", "Chen et al., Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout, NeurIPS 2020", "gradient", {"leak": 0.0, "seed": 0}, row_sparse=False)  # fmt: skip
_register("trimmed_mean", _on_gradients(lambda h: trimmed_mean(h["trim_number"])), "Trimmed mean: per coordinate, the mean of the task entries without the t largest and t smallest (K > 2t)", "Yin et al., Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates, ICML 2018", "gradient", {"trim_number": 1}, row_sparse=False)  # fmt: skip
_register("modo", _on_gradients(lambda h: modo(h["gamma"], h["rho"])), "MoDo: one projected gradient step per iteration on the min-norm weights, λ ← Π(λ − γ(Gλ + ρλ))", "Chen, Fernando, Ying & Chen, Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance, NeurIPS 2023", "gradient", {**_REFRESH, "gamma": 1e-3, "rho": 0.1})  # fmt: skip
_register("moco", _on_gradients(lambda h: moco(h["beta"], h["beta_sigma"], h["gamma"], h["gamma_sigma"], h["rho"])), "MoCo: tracked task gradients y_k, weights by one projected step on Π(λ − γ(YYᵀ + ρI)λ), direction Σ λ_k y_k", "Fernando et al., Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach, ICLR 2023", "gradient", {"beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0}, row_sparse=False)  # fmt: skip
_register("excess_mtl", _on_gradients(lambda h: excess_mtl(h["robust_step_size"])), "ExcessMTL: weights raised multiplicatively by each task's excess-risk estimate (AdaGrad-preconditioned)", "He et al., Robust Multi-Task Learning with Excess Risks, ICML 2024", "gradient", {"robust_step_size": 1e-2}, row_sparse=False)  # fmt: skip
_register("pcd", _on_gradients(lambda h: pcd(h["tau"], h["beta"])), "PCD: the first task's gradient, changed least so that every other task gets a fraction τ of its normalised progress", "Varam & AlHajri, Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical Multi-Objective Optimization, TMLR 2026", "gradient", {**_REFRESH, "tau": 0.02, "beta": 0.999})  # fmt: skip
_register("adatask", _build_adatask, "AdaTask: separate Adam moments per task on shared parameters, summed", _ADATASK, "update", row_sparse=False)  # fmt: skip
_register("clippy_adam", _on_gradients(ones(), inner=_clippy, exact_on_rows=False), "Clippy-Adam on the summed gradient: per-tensor update clipping |Δw| ≤ λ_rel|w| + λ_abs", _CLIPPY, "gradient", _CLIP, row_sparse=False)  # fmt: skip

METHODS: dict[str, MethodInfo] = {name: info for name, (info, _) in _REGISTRY.items()}
"""Ordered mapping: method name -> :class:`MethodInfo` (description, reference, needs_losses, level, hyper)."""


def method_names() -> tuple[str, ...]:
  """The names :func:`make_method` accepts, in registry order.

  Example:
    >>> from pub_optax import method_names
    >>> method_names()[:3]
    ('equal', 'pub', 'pub_rms')
  """
  return tuple(_REGISTRY)


def make_method(
  name: str,
  learning_rate: optax.ScalarOrSchedule,
  *,
  num_tasks: int,
  shared: SharedSpec = None,
  inject_learning_rate: bool = False,
  **hyper: Any,
) -> optax.GradientTransformationExtraArgs:
  r"""Builds a registered multi-task method as one optax transformation.

  Args:
    name: one of :func:`method_names` (see :data:`METHODS`).
    learning_rate: float or optax schedule.
    num_tasks: K, the leading axis of the per-task gradients.
    shared: which leaves are shared and balanced (``None``: all); see
      :func:`pub_optax.balance`.
    inject_learning_rate: hold the learning rate in the state
      (``optax.inject_hyperparams``, read it or set it as
      ``state.hyperparams["learning_rate"]``) instead of baking it into the
      program: one compiled step then serves every rate of a sweep.
    **hyper: the method's hyper-parameters (``METHODS[name].hyper``), e.g.
      ``b1``, ``weight_decay``, ``c`` for CAGrad, ``seed`` for PCGrad/RLW.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Methods with
    ``METHODS[name].needs_losses`` require ``update(..., task_losses=losses)``.

  Raises:
    ValueError: unknown ``name`` (the message lists the valid names).
    TypeError: a hyper-parameter the method does not take (named in the message).

  Example:
    >>> import jax.numpy as jnp
    >>> import pub_optax
    >>> from pub_optax import make_method
    >>> tx = make_method("mgda", 1e-3, num_tasks=2, weight_decay=1e-6)
    >>> params = jnp.ones(3)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), state, params)
    >>> [round(float(w), 3) for w in pub_optax.balance_state(state).weights]
    [0.5, 0.5]
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid names: {', '.join(_REGISTRY)}")
  info, builder = _REGISTRY[name]
  unknown = sorted(set(hyper) - set(info.hyper))
  if unknown:
    raise TypeError(
      f"method {name!r} does not accept hyper-parameter(s) {unknown}; "
      f"it accepts: {sorted(info.hyper)}"
    )
  h = {**info.hyper, **hyper}
  if inject_learning_rate:
    return optax.inject_hyperparams(
      lambda learning_rate: builder(learning_rate, num_tasks, shared, h)
    )(learning_rate)
  return builder(learning_rate, num_tasks, shared, h)
