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


ADVERSARIAL_KINDS = (
  "random",
  "rank_one",
  "rank_one_signed",
  "alternating",
  "opposed",
  "near_duplicate",
  "zero_rows",
  "zero",
  "orthogonal",
  "low_rank",
)
"""What :func:`adversarial_grams` draws, in turn: full rank; rank one with positive and
with random-sign coefficients; ``outer(s, s)`` with ``s = ±1`` alternating (the tasks
cancel exactly); pairs of exactly opposed tasks; near duplicates (``1e-7`` apart);
random tasks with some rows zero; the zero matrix; orthogonal tasks; rank ``K/2``."""


def _adversarial_vectors(rng: np.random.Generator, kind: str, k: int) -> np.ndarray:
  dim = k + 3
  if kind == "random":
    return rng.standard_normal((k, dim))
  if kind in ("rank_one", "rank_one_signed"):
    coef = rng.uniform(0.5, 2.0, size=k)
    if kind == "rank_one_signed":
      coef *= rng.choice([-1.0, 1.0], size=k)
    return np.outer(coef, rng.standard_normal(dim))
  if kind == "alternating":
    return np.outer((-1.0) ** np.arange(k), np.eye(1, dim)[0])
  if kind == "opposed":
    j = rng.standard_normal((k, dim))
    j[1::2] = -j[0 : k - k % 2 : 2] * rng.uniform(0.5, 2.0, size=(k // 2, 1))
    return j
  if kind == "near_duplicate":
    return rng.standard_normal((1, dim)) + 1e-7 * rng.standard_normal((k, dim))
  if kind == "zero_rows":
    j = rng.standard_normal((k, dim))
    j[rng.random(k) < 0.3] = 0.0
    return j
  if kind == "zero":
    return np.zeros((k, dim))
  if kind == "orthogonal":
    return np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k]
  rank = max(k // 2, 1)
  return rng.standard_normal((k, rank)) @ rng.standard_normal((rank, dim))


def adversarial_grams(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``n`` hard Gram matrices for K tasks, float64, cycling through :data:`ADVERSARIAL_KINDS`.

  Every matrix gets an overall scale and per-task scales such that its squared task
  norms ``G_kk`` spread over a random part of ``[1e-30, 1e30]`` (every entry stays
  in float32's normal range).

  Returns:
    ``(grams, kinds)``: ``(n, K, K)`` matrices and the ``(n,)`` index of each one's kind.
  """
  rng = np.random.default_rng([seed, k])
  grams, kinds = [], []
  for i in range(n):
    kind = i % len(ADVERSARIAL_KINDS)
    j = _adversarial_vectors(rng, ADVERSARIAL_KINDS[kind], k)
    norms = np.linalg.norm(j, axis=1, keepdims=True)
    unit = np.divide(j, norms, out=np.zeros_like(j), where=norms > 0)
    lo, hi = np.sort(rng.uniform(-30.0, 30.0, size=2))
    if i % 3 == 0:  # a third of the matrices keep similar task norms
      lo = hi = rng.uniform(-30.0, 30.0)
    log_sq = rng.uniform(lo, hi, size=(k, 1))
    if kind == ADVERSARIAL_KINDS.index("alternating") and i % 2:
      log_sq[:] = lo  # exact cancellation needs equal norms
    j = unit * 10.0 ** (log_sq / 2.0)
    grams.append(j @ j.T)
    kinds.append(kind)
  return np.stack(grams), np.array(kinds)
