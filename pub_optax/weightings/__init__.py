"""Task weightings: K×K Gram matrix (and optional task losses) -> K weights."""

from pub_optax.weightings.base import Weighting, WeightingResult, stateless
from pub_optax.weightings.nash import NashResult, nash, nash_weights
