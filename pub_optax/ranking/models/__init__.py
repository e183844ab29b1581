"""Flax NNX multi-task ranking models: Shared-Bottom, MMoE, OMoE, PLE, ESMM, AITM, Cross-stitch,
DSelect-k and a single-task baseline (one independent model per task).

Every model is built as ``Model(cardinalities, n_numerical, n_tasks, *, ..., rngs)``, is called
as ``model(categorical, numerical)`` and returns ``(B, n_tasks)`` float32 *logits* (``sigmoid``
gives each task's probability). ``model.shared_mask()`` labels the parameters shared between
tasks, and :func:`apply` runs a split model as a pure function for jitted per-task-gradient
steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx

from pub_optax.ranking.models.aitm import AIT, AITM, calibration_penalty
from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.cross_stitch import CrossStitch, CrossStitchNet
from pub_optax.ranking.models.dselect_k import DSelectGate, DSelectK, smooth_step
from pub_optax.ranking.models.esmm import ESMM, product_logit
from pub_optax.ranking.models.functional import apply, split
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Gate, Tower
from pub_optax.ranking.models.mmoe import MMoE
from pub_optax.ranking.models.omoe import OMoE
from pub_optax.ranking.models.ple import CGC, PLE
from pub_optax.ranking.models.shared_bottom import SharedBottom
from pub_optax.ranking.models.single_task import SingleTask, TaskModel

_MODELS = {
  "shared_bottom": SharedBottom,
  "mmoe": MMoE,
  "ple": PLE,
  "esmm": ESMM,
  "aitm": AITM,
  "single_task": SingleTask,
  "omoe": OMoE,
  "cross_stitch": CrossStitchNet,
  "dselect_k": DSelectK,
}
MODEL_NAMES = tuple(_MODELS)

PRESETS = ("small", "paper")


def model_kwargs(model: str, preset: str, dropout: float) -> dict:
  """Model sizes: ``paper`` (the PUB paper's settings, the models' defaults) or ``small`` (CPU-friendly)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
  kwargs = {"dropout": dropout}
  if preset == "paper":
    return kwargs
  hidden = "expert_dims" if model in ("mmoe", "ple", "omoe", "dselect_k") else "bottom_dims"
  if model == "cross_stitch":
    hidden = "column_dims"
  kwargs.update(embed_dim=16, tower_dims=(32,), **{hidden: (64, 32)})
  if model in ("mmoe", "omoe", "dselect_k"):
    kwargs["n_experts"] = 4
  if model == "ple":
    kwargs.update(n_shared_experts=2, n_task_experts=2)
  return kwargs


def build_model(
  name: str,
  cardinalities: Sequence[int],
  n_numerical: int,
  n_tasks: int,
  *,
  rngs: nnx.Rngs,
  **kwargs,
) -> MultiTaskModel:
  """Build a ranking model by name.

  Args:
    name: one of :data:`MODEL_NAMES`: ``"shared_bottom"``, ``"mmoe"``, ``"ple"``, ``"esmm"``,
      ``"aitm"``, ``"single_task"``, ``"omoe"``, ``"cross_stitch"``, ``"dselect_k"``.
    cardinalities: ids per categorical field.
    n_numerical: number of dense features.
    n_tasks: number of tasks.
    rngs: NNX random streams.
    **kwargs: the model's keyword arguments (``embed_dim``, ``dropout``, ``norm``, ...).

  Returns:
    The model, in train mode.

  Example:
    >>> from flax import nnx
    >>> m = build_model("mmoe", (5, 7), 3, 2, rngs=nnx.Rngs(0), embed_dim=4, n_experts=2,
    ...                 expert_dims=(8,), tower_dims=(4,))
    >>> type(m).__name__
    'MMoE'
  """
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  return _MODELS[name](cardinalities, n_numerical, n_tasks, rngs=rngs, **kwargs)


__all__ = [
  "AIT",
  "AITM",
  "CGC",
  "CrossStitch",
  "CrossStitchNet",
  "DSelectGate",
  "DSelectK",
  "ESMM",
  "MLP",
  "MMoE",
  "MODEL_NAMES",
  "MultiTaskModel",
  "OMoE",
  "PLE",
  "PRESETS",
  "FeatureEmbedding",
  "Gate",
  "SharedBottom",
  "SingleTask",
  "TaskModel",
  "Tower",
  "apply",
  "build_model",
  "calibration_penalty",
  "model_kwargs",
  "product_logit",
  "smooth_step",
  "split",
]
