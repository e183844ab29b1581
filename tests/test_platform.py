"""The Gram reduction is chosen by the platform the program is lowered for, not by the host.

Lowering for ``cuda`` or ``tpu`` needs no such device: ``jit(f).trace(...).lower(
lowering_platforms=...)`` emits StableHLO for that platform on any host.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pub_optax
from pub_optax._gram import gram_matrix, leaf_gram

K, N = 4, 1 << 16  # one large leaf: 64 lanes of 1024, or 8 blocks of 8192 columns


def _lanes_product(k: int) -> str:
  return f"tensor<{k}x{k}x{N // 1024}x1024xf32>"  # the lanes path's elementwise products


def _tree(k: int = K):
  rng = np.random.default_rng(0)
  return {
    "big": jnp.asarray(rng.normal(size=(k, 64, 1024)), jnp.float32),
    "small": jnp.asarray(rng.normal(size=(k, 10)), jnp.float32),
  }


MASK = {"big": True, "small": True}


def _lowered(platform: str, reduction: str = "auto", k: int = K) -> str:
  fn = jax.jit(lambda t: gram_matrix(t, MASK, reduction))
  return fn.trace(_tree(k)).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("k", [2, K])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerators_get_the_matmul(platform, k):
  text = _lowered(platform, k=k)
  assert text.count("stablehlo.dot_general") == 2  # the large leaf and the small one
  assert _lanes_product(k) not in text and "stablehlo.while" not in text


def test_cpu_gets_the_lanes_reduction_up_to_three_tasks():
  text = _lowered("cpu", k=3)
  assert _lanes_product(3) in text and "stablehlo.while" not in text
  assert text.count("stablehlo.dot_general") == 1  # only the small leaf


def test_cpu_gets_the_blocks_reduction_from_four_tasks():
  text = _lowered("cpu")
  assert "stablehlo.while" in text and _lanes_product(K) not in text
  assert text.count("stablehlo.dot_general") == 2  # one block in the loop body, the small leaf


def test_both_platforms_in_one_program_keep_both_branches():
  fn = jax.jit(lambda t: gram_matrix(t, MASK))
  text = fn.trace(_tree()).lower(lowering_platforms=("cpu", "cuda")).as_text()
  # a runtime platform index selects the branch; dot_general itself is lowered per platform
  assert "_platform_index" in text and "stablehlo.while" in text


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
def test_explicit_reductions_ignore_the_platform(platform):
  matmul, lanes = _lowered(platform, "matmul"), _lowered(platform, "lanes")
  blocks = _lowered(platform, "blocks")
  assert _lanes_product(K) not in matmul and matmul.count("stablehlo.dot_general") == 2
  assert "stablehlo.while" not in matmul + lanes
  assert _lanes_product(K) in lanes and lanes.count("stablehlo.dot_general") == 1
  assert "stablehlo.while" in blocks and _lanes_product(K) not in blocks


@pytest.mark.parametrize("k,auto", [(3, "lanes"), (K, "blocks")])
def test_results_equal_on_cpu(k, auto):
  tree = _tree(k)
  flat = np.concatenate([np.asarray(v, np.float64).reshape(k, -1) for v in tree.values()], axis=1)
  exact = flat @ flat.T
  got = {
    r: np.asarray(jax.jit(lambda t, r=r: gram_matrix(t, MASK, r))(tree))
    for r in ("auto", "lanes", "blocks", "matmul")
  }
  np.testing.assert_array_equal(got["auto"], got[auto])  # the branch CPU runs
  for g in got.values():
    np.testing.assert_allclose(g, exact, rtol=2e-5)
  big = tree["big"].reshape(k, -1)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(leaf_gram)(big)),
    np.asarray(jax.jit(leaf_gram, static_argnums=1)(big, auto)),
  )


def _dots(strategy: str, platform: str) -> int:
  def losses(w, x):
    h = jnp.tanh(x @ w)
    return jnp.stack([jnp.mean(h**2), jnp.mean(jnp.sin(h)), jnp.mean(h)])

  fn = jax.jit(pub_optax.value_and_task_grads(losses, strategy=strategy))
  w, x = jnp.ones((4, 3)), jnp.ones((5, 4))
  text = fn.trace(w, x).lower(lowering_platforms=(platform,)).as_text()
  return text.count("stablehlo.dot_general")


def test_task_grads_auto_strategy_follows_the_lowering_platform():
  # K calls of the VJP hold K backward matmuls where one vmapped VJP holds a single batched one.
  assert _dots("loop", "cpu") > _dots("vmap", "cpu")
  assert _dots("auto", "cuda") == _dots("vmap", "cuda")
  assert _dots("auto", "tpu") == _dots("vmap", "tpu")
  assert _dots("auto", "cpu") == _dots(pub_optax._grads._CPU_STRATEGY, "cpu")
