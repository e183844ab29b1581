"""Task weightings: K×K Gram matrix (and optional task losses) -> K weights.

Each weighting is a :class:`Weighting`; :func:`pub_optax.balance` applies any of
them to per-task gradients (classic methods) or to per-task updates (PUB).
"""

from pub_optax.weightings._aligned import aligned_mtl, aligned_mtl_weights
from pub_optax.weightings._base import Kind, Weighting, WeightingResult, stateless, stateless_solver
from pub_optax.weightings._cagrad import CAGradResult, cagrad, cagrad_weights
from pub_optax.weightings._imtl import imtl_g, imtl_g_weights
from pub_optax.weightings._mgda import MGDAResult, mgda, mgda_weights
from pub_optax.weightings._nash import NashResult, nash, nash_weights
from pub_optax.weightings._pcgrad import pcgrad, pcgrad_weights, random_orders
from pub_optax.weightings._qp import QPResult, nonneg_qp
from pub_optax.weightings._simple import RLWState, equal, ones, rlw
from pub_optax.weightings._upgrad import upgrad, upgrad_weights

__all__ = [
  "CAGradResult",
  "Kind",
  "RLWState",
  "stateless_solver",
  "MGDAResult",
  "NashResult",
  "QPResult",
  "Weighting",
  "WeightingResult",
  "aligned_mtl",
  "aligned_mtl_weights",
  "cagrad",
  "cagrad_weights",
  "equal",
  "imtl_g",
  "imtl_g_weights",
  "mgda",
  "mgda_weights",
  "nash",
  "nash_weights",
  "nonneg_qp",
  "ones",
  "pcgrad",
  "pcgrad_weights",
  "random_orders",
  "rlw",
  "stateless",
  "upgrad",
  "upgrad_weights",
]
