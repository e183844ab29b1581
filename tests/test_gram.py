"""The Gram reduction: every way of computing one leaf's ``D Dᵀ`` agrees with float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax._gram import gram_matrix, leaf_gram, task_sum


@pytest.mark.parametrize("k,n", [(2, 1 << 15), (5, 3 * 1024 * 16), (3, 40_000), (4, 1000)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_reduction_agrees_with_float64(k, n, dtype):
  rng = np.random.default_rng(k * n)
  x = rng.normal(size=(k, n)) * rng.uniform(0.1, 10, size=(k, 1))
  x[1] = -0.7 * x[0] + 0.1 * x[1]  # a conflicting pair
  flat = jnp.asarray(x, dtype)
  exact = np.asarray(flat, np.float64) @ np.asarray(flat, np.float64).T
  scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
  # (4, 1000) is below the size of both CPU reductions: matmul; 40,000 columns leave blocks a tail
  for reduction in ("matmul", "lanes", "blocks", "auto"):
    got = jax.jit(leaf_gram, static_argnums=1)(flat, reduction)
    assert got.dtype == jnp.float32 and got.shape == (k, k)
    # float32 accumulation over n terms: measured <= 3.9e-6 (bf16 inputs, matmul); accumulating
    # in bf16 or dropping one lane or row costs >= 7.8e-4, so 1e-4 sits between the two
    np.testing.assert_allclose(np.asarray(got, np.float64) / scale, exact / scale, atol=1e-4)


def test_float64_leaves_stay_float64_and_bad_reduction_is_named(x64):
  flat = jnp.asarray(np.random.default_rng(0).normal(size=(3, 1 << 15)))
  for reduction in ("matmul", "lanes", "blocks"):
    got = leaf_gram(flat, reduction)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), np.asarray(flat) @ np.asarray(flat).T, rtol=1e-12)
  with pytest.raises(ValueError, match="reduction must be one of .*'blocks'.*, got 'dot'"):
    leaf_gram(jnp.ones((2, 4)), "dot")


def test_gram_matrix_sums_the_masked_leaves():
  rng = np.random.default_rng(1)
  tree = {
    "big": jnp.asarray(rng.normal(size=(2, 256, 256)), jnp.float32),
    "small": jnp.asarray(rng.normal(size=(2, 7)), jnp.float32),
    "head": jnp.asarray(rng.normal(size=(2, 9)), jnp.float32),
  }
  mask = {"big": True, "small": True, "head": False}
  flat = np.concatenate([np.asarray(tree["big"]).reshape(2, -1), np.asarray(tree["small"])], axis=1)
  np.testing.assert_allclose(np.asarray(gram_matrix(tree, mask)), flat @ flat.T, rtol=2e-5)
  with pytest.raises(ValueError, match="selects no leaf"):
    gram_matrix(tree, {"big": False, "small": False, "head": False})


@pytest.mark.parametrize("k,shape", [(1, (5,)), (3, (4, 6)), (8, (2, 3, 5))])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_task_sum_is_the_leading_axis_sum_in_float32(k, shape, dtype):
  x = jnp.asarray(np.random.default_rng(k).normal(size=(k, *shape)), dtype)
  got = task_sum(x)
  assert got.dtype == jnp.float32 and got.shape == shape
  np.testing.assert_allclose(got, np.asarray(x, np.float64).sum(0), rtol=1e-6, atol=1e-6)
