"""Task weightings: K×K Gram matrix (and optional task losses) -> K weights.

Each weighting is a :class:`Weighting`; :func:`pub_optax.balance` applies any of
them to per-task gradients (classic methods) or to per-task updates (PUB).
Coordinate-kind weightings (:func:`graddrop`, :func:`trimmed_mean`, :func:`moco`,
:func:`excess_mtl`) combine the task vectors coordinate by coordinate, or keep
per-coordinate state, and return the direction itself.
"""

from pub_optax.weightings._aligned import aligned_mtl, aligned_mtl_weights
from pub_optax.weightings._base import (
  CoordinateResult,
  Kind,
  Weighting,
  WeightingResult,
  coordinatewise,
  stateless,
  stateless_solver,
)
from pub_optax.weightings._cagrad import CAGradResult, cagrad, cagrad_weights
from pub_optax.weightings._config import config, config_weights
from pub_optax.weightings._constant import constant
from pub_optax.weightings._cr_mogm import CRMOGMState, cr_mogm, cr_mogm_update
from pub_optax.weightings._db_mtl import DBMTLState, db_mtl, db_mtl_weights
from pub_optax.weightings._dualproj import dualproj, dualproj_weights
from pub_optax.weightings._dwa import DWAState, dwa
from pub_optax.weightings._excess_mtl import ExcessMTLState, excess_mtl
from pub_optax.weightings._fairgrad import FairGradResult, fairgrad, fairgrad_weights
from pub_optax.weightings._geometric import geometric_mean, gls
from pub_optax.weightings._graddrop import GradDropState, graddrop, graddrop_leaf
from pub_optax.weightings._gradnorm import GradNormState, gradnorm, gradnorm_step
from pub_optax.weightings._gradvac import (
  GradVacState,
  gradvac,
  gradvac_weights,
  vaccine_coefficient,
)
from pub_optax.weightings._imtl import imtl_g, imtl_g_weights
from pub_optax.weightings._imtl_hybrid import IMTLState, imtl, imtl_weights
from pub_optax.weightings._imtl_l import IMTLLState, imtl_l
from pub_optax.weightings._krum import krum, krum_scores, krum_weights
from pub_optax.weightings._mgda import MGDAResult, mgda, mgda_weights
from pub_optax.weightings._moco import MoCoState, moco
from pub_optax.weightings._modo import modo, simplex_step
from pub_optax.weightings._nash import NashResult, nash, nash_weights
from pub_optax.weightings._pbi import PBIState, pbi
from pub_optax.weightings._pcd import PCDResult, PCDState, pcd, pcd_weights
from pub_optax.weightings._pcgrad import pcgrad, pcgrad_weights, random_orders
from pub_optax.weightings._qp import QPResult, nonneg_qp
from pub_optax.weightings._sdmgrad import (
  SDMGradResult,
  project_to_simplex,
  sdmgrad,
  sdmgrad_weights,
)
from pub_optax.weightings._simple import RLWState, equal, ones, rlw
from pub_optax.weightings._stch import STCHState, stch
from pub_optax.weightings._trimmed_mean import trimmed_mean, trimmed_mean_leaf
from pub_optax.weightings._upgrad import upgrad, upgrad_weights

__all__ = [
  "CAGradResult",
  "CRMOGMState",
  "CoordinateResult",
  "DBMTLState",
  "DWAState",
  "ExcessMTLState",
  "FairGradResult",
  "GradDropState",
  "GradNormState",
  "GradVacState",
  "IMTLLState",
  "IMTLState",
  "Kind",
  "MGDAResult",
  "MoCoState",
  "NashResult",
  "PBIState",
  "PCDResult",
  "PCDState",
  "QPResult",
  "RLWState",
  "SDMGradResult",
  "STCHState",
  "Weighting",
  "WeightingResult",
  "aligned_mtl",
  "aligned_mtl_weights",
  "cagrad",
  "cagrad_weights",
  "config",
  "config_weights",
  "constant",
  "coordinatewise",
  "cr_mogm",
  "cr_mogm_update",
  "db_mtl",
  "db_mtl_weights",
  "dualproj",
  "dualproj_weights",
  "dwa",
  "equal",
  "excess_mtl",
  "fairgrad",
  "fairgrad_weights",
  "geometric_mean",
  "gls",
  "graddrop",
  "graddrop_leaf",
  "gradnorm",
  "gradnorm_step",
  "gradvac",
  "gradvac_weights",
  "imtl",
  "imtl_g",
  "imtl_g_weights",
  "imtl_l",
  "imtl_weights",
  "krum",
  "krum_scores",
  "krum_weights",
  "mgda",
  "mgda_weights",
  "moco",
  "modo",
  "nash",
  "nash_weights",
  "nonneg_qp",
  "ones",
  "pbi",
  "pcd",
  "pcd_weights",
  "pcgrad",
  "pcgrad_weights",
  "project_to_simplex",
  "random_orders",
  "rlw",
  "sdmgrad",
  "sdmgrad_weights",
  "simplex_step",
  "stateless",
  "stateless_solver",
  "stch",
  "trimmed_mean",
  "trimmed_mean_leaf",
  "upgrad",
  "upgrad_weights",
  "vaccine_coefficient",
]
