"""Samplers of Gram matrices of controlled size, rank and scale (TorchJD-style), in numpy float64.

The weighting tests share one *standard batch* per K: a fixed stack of 32 Gram
matrices covering full and low rank at every scale, a zero task, identical
tasks, the zero matrix and random full-rank matrices. One jitted, vmapped call
per (weighting, K, dtype) then checks every property, so compilations are shared
(a permuted copy of the batch has the same shape and reuses the compiled call).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SCALES = (1e-10, 1e-5, 1.0, 1e5, 1e10)
"""Overall scales of G covered by the structure tests (plus the zero matrix)."""

# The fixed example of the exact-value tests: two conflicting task vectors.
EXAMPLE_J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
EXAMPLE_GRAM = EXAMPLE_J @ EXAMPLE_J.T  # [[18, -22], [-22, 38]]

BATCH = 32


class Batch(NamedTuple):
  """A stack of Gram matrices with labels of what each one is.

  Attributes:
    grams: ``(BATCH, K, K)`` float64.
    vectors: ``(BATCH, K, P)`` task vectors with ``grams = vectors @ vectorsᵀ``.
    full: bool mask, full-rank matrices (unique solutions for most methods).
    zero: bool mask, the zero matrix.
    scaled: list of index groups: the same matrix at every scale of :data:`SCALES`.
  """

  grams: np.ndarray
  vectors: np.ndarray
  full: np.ndarray
  zero: np.ndarray
  scaled: list


def task_vectors(
  rng: np.random.Generator, k: int, rank: int, dim: int, norm_spread: float = 1.0
) -> np.ndarray:
  """``(k, dim)`` task vectors of the given rank; row norms vary by up to ``10^±norm_spread``."""
  j = rng.standard_normal((k, rank)) @ rng.standard_normal((rank, dim))
  return j * 10.0 ** rng.uniform(-norm_spread, norm_spread, size=(k, 1))


def standard_batch(k: int, seed: int = 0) -> Batch:
  """The fixed batch of 32 Gram matrices for K tasks (see the module docstring)."""
  rng = np.random.default_rng(seed)
  dim = k + 2
  vectors, full, scaled = [], [], []

  def add(j, is_full):
    vectors.append(j)
    full.append(is_full)

  for rank in (k, k, max(k - 1, 1), 1):  # two full-rank and two low-rank matrices, at every scale
    base = task_vectors(rng, k, rank, dim)
    scaled.append(list(range(len(vectors), len(vectors) + len(SCALES))))
    for s in SCALES:
      add(base * np.sqrt(s), rank == k)
  j = task_vectors(rng, k, k, dim)
  j[0] = 0.0  # one task carries no vector
  add(j, False)
  add(np.repeat(task_vectors(rng, 1, 1, dim), k, axis=0), k == 1)  # identical tasks
  add(np.zeros((k, dim)), False)  # the zero matrix
  while len(vectors) < BATCH:
    add(task_vectors(rng, k, k, dim), True)
  vectors = np.stack(vectors)
  grams = vectors @ vectors.transpose(0, 2, 1)
  zero = ~np.any(grams, axis=(1, 2))
  return Batch(grams, vectors, np.array(full) & ~zero, zero, scaled)


def permuted(batch: Batch, seed: int = 1) -> tuple[Batch, np.ndarray]:
  """The batch with the tasks of every matrix permuted by one random permutation."""
  perm = np.random.default_rng(seed).permutation(batch.grams.shape[1])
  vectors = batch.vectors[:, perm]
  return batch._replace(grams=batch.grams[:, perm][:, :, perm], vectors=vectors), perm
