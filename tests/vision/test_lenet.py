"""MultiLeNet: shapes, shared mask, per-task gradient flow, training on synthetic Multi-Fashion."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pub_optax
from pub_optax import vision
from pub_optax.ranking.models import apply, split


def class_bar_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 28×28 "items": class c is a bright horizontal bar at rows 2c + 2 and 2c + 3, on noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n)
  items = rng.integers(0, 60, (n, 28, 28))
  rows = 2 + 2 * labels
  bright = rng.integers(180, 256, (n, 1))
  items[np.arange(n), rows] = bright
  items[np.arange(n), rows + 1] = bright
  return items.astype(np.uint8), labels


def equal_weight_tx(mask):
  equal = pub_optax.weightings.stateless(
    "equal", lambda g: jnp.full(g.shape[0], 1 / g.shape[0], g.dtype)
  )
  return pub_optax.balance(
    optax.scale_by_adam(), equal, 1e-3, num_tasks=2, level="gradient", shared=mask
  )


@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_shapes(n_tasks):
  model = vision.MultiLeNet(n_tasks, 7, rngs=nnx.Rngs(0))
  assert model(jnp.zeros((5, 36, 36, 1))).shape == (5, n_tasks, 7)
  assert model(jnp.zeros((5, 36, 36))).shape == (5, n_tasks, 7)  # channel axis added
  small = vision.MultiLeNet(n_tasks, rngs=nnx.Rngs(0), image_shape=(28, 28, 1))
  assert small(jnp.zeros((2, 28, 28, 1))).shape == (2, n_tasks, 10)
  assert small.trunk.dense.in_features == 4 * 4 * 20  # the MGDA LeNet on 28×28 inputs
  assert model.trunk.dense.in_features == 6 * 6 * 20


def test_rejects_bad_sizes():
  with pytest.raises(ValueError, match="n_tasks"):
    vision.MultiLeNet(0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="too small"):
    vision.MultiLeNet(rngs=nnx.Rngs(0), image_shape=(12, 12, 1))


def test_shared_mask_structure():
  model = vision.MultiLeNet(rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = model.shared_mask()
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  assert all(type(leaf) is bool for _, leaf in flat)
  for path, leaf in flat:
    top = str(path[0].key if hasattr(path[0], "key") else path[0])
    assert leaf == (top == "trunk"), path
  assert sum(flat_leaf for _, flat_leaf in flat) == 6  # conv1, conv2, dense: kernel + bias
  assert sum(not flat_leaf for _, flat_leaf in flat) == 4  # two heads: kernel + bias


def test_heads_get_gradient_only_from_their_task():
  model = vision.MultiLeNet(3, rngs=nnx.Rngs(1))
  graphdef, params, rest = split(model)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((16, 36, 36, 1), np.float32))
  labels = jnp.asarray(rng.integers(0, 10, (16, 3)))

  def losses_fn(p):
    logits, _ = apply(graphdef, p, rest, images)
    return vision.task_losses(logits, labels)

  losses, grads = jax.jit(pub_optax.value_and_task_grads(losses_fn))(params)
  assert losses.shape == (3,)
  for k in range(3):
    for head in range(3):
      for leaf in jax.tree.leaves(grads["heads"][head]):
        assert leaf.shape[0] == 3
        norm = float(jnp.abs(leaf[k]).max())
        assert (norm > 0) == (k == head), (k, head, norm)
    for leaf in jax.tree.leaves(grads["trunk"]):
      assert float(jnp.abs(leaf[k]).max()) > 0


def test_task_losses_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 2, 10)).astype(np.float32)
  labels = rng.integers(0, 10, (6, 2))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.take_along_axis(logp, labels[..., None], -1)[..., 0].mean(0)
  np.testing.assert_allclose(
    vision.task_losses(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-5
  )


def test_evaluate_pads_without_dropping_rows():
  items, labels = class_bar_items(60, seed=0)
  data = vision.make_multi_fashion(items, labels, n=37, seed=0)
  trainer = vision.Trainer(vision.MultiLeNet(rngs=nnx.Rngs(0)), optax.adam(1e-3))
  whole = trainer.evaluate(trainer.params, trainer.rest, data, batch_size=37)
  padded = trainer.evaluate(trainer.params, trainer.rest, data, batch_size=16)
  np.testing.assert_allclose(padded["loss"], whole["loss"], rtol=1e-5)
  assert padded["accuracy"] == whole["accuracy"]
  logits = trainer.model(jnp.asarray(data.images))
  correct = np.asarray(jnp.argmax(logits, -1)) == data.labels
  np.testing.assert_allclose(whole["accuracy"], correct.mean(0))


def test_gradient_level_balance_step():
  model = vision.MultiLeNet(rngs=nnx.Rngs(0))
  trainer = vision.Trainer(model, equal_weight_tx(model.shared_mask()))
  items, labels = class_bar_items(40, seed=1)
  data = vision.make_multi_fashion(items, labels, n=16, seed=1)
  batch = {"images": data.images, "labels": data.labels}
  out = trainer.train_step(trainer.params, trainer.rest, trainer.tx.init(trainer.params), batch)
  np.testing.assert_allclose(out.weights, [0.5, 0.5])
  assert np.isfinite(out.losses).all() and float(out.shared_update_rms) > 0


def test_batches_static_size_and_seeded():
  data = vision.MultiTaskImages(
    np.zeros((10, 2, 2, 1), np.float32), np.arange(20).reshape(10, 2) % 10
  )
  first = list(vision.batches(data, 4, seed=0, epoch=0))
  assert [len(b["labels"]) for b in first] == [4, 4]
  again = list(vision.batches(data, 4, seed=0, epoch=0))
  other = list(vision.batches(data, 4, seed=0, epoch=1))
  assert all(np.array_equal(a["labels"], b["labels"]) for a, b in zip(first, again))
  assert not all(np.array_equal(a["labels"], b["labels"]) for a, b in zip(first, other))
  assert [len(b["labels"]) for b in vision.batches(data, 32, seed=0, epoch=0)] == [10]


def test_pub_adam_learns_synthetic_multi_fashion():
  items, labels = class_bar_items(600, seed=0)
  test_items, test_labels = class_bar_items(200, seed=1)
  splits = vision.multi_fashion_splits(
    n_train=2048,
    n_val=256,
    n_test=512,
    seed=0,
    val_pool=100,
    data={"train": (items, labels), "test": (test_items, test_labels)},
  )
  model = vision.MultiLeNet(rngs=nnx.Rngs(0))
  tx = pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask())
  records = []
  start = time.perf_counter()
  result = vision.fit(model, tx, splits, epochs=3, batch_size=64, seed=0, log=records.append)
  elapsed = time.perf_counter() - start
  assert len(result["history"]) == 3 and records == result["history"]
  best = result["best_epoch"]
  assert result["val"] == result["history"][best]["val"]
  assert result["val"]["mean_accuracy"] == max(r["val"]["mean_accuracy"] for r in records)
  # The model holds the best epoch's parameters.
  trainer = vision.Trainer(model, tx)
  assert trainer.evaluate(trainer.params, trainer.rest, splits["val"]) == result["val"]
  test_accuracy = result["test"]["accuracy"]
  assert min(test_accuracy) > 0.6, test_accuracy  # chance is 0.1
  assert all(np.isfinite(w) for r in records for w in r["weights"])
  # Convex PUB keeps Adam's step size: the applied shared update's RMS is of the order of the rate.
  assert all(0 < r["shared_update_rms"] <= 1e-3 * 1.01 for r in records), [
    r["shared_update_rms"] for r in records
  ]
  assert elapsed < 40, elapsed


def test_fit_stops_after_patience_epochs_without_improvement():
  items, labels = class_bar_items(60, seed=0)
  data = vision.make_multi_fashion(items, labels, n=32, seed=0)
  model = vision.MultiLeNet(rngs=nnx.Rngs(0))
  mask = model.shared_mask()
  frozen = pub_optax.balance(
    optax.scale_by_adam(),
    pub_optax.weightings.stateless("equal", lambda g: jnp.full(g.shape[0], 0.5, g.dtype)),
    0.0,
    num_tasks=2,
    level="gradient",
    shared=mask,
  )
  splits = {"train": data, "val": data}
  # A zero learning rate never changes validation accuracy: epoch 0 stays best, two more run.
  result = vision.fit(model, frozen, splits, epochs=10, batch_size=16, patience=2)
  assert result["best_epoch"] == 0 and result["epochs_run"] == 3 == len(result["history"])
  assert vision.fit(model, frozen, splits, epochs=4, batch_size=16)["epochs_run"] == 4
  with pytest.raises(ValueError, match="patience"):
    vision.fit(model, frozen, splits, epochs=2, patience=0)
