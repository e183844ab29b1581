"""Row-sparse embedding gradients in the ranking trainer: the dense training, for every model.

The models use LayerNorm here: under BatchNorm the bias of the Linear before it has zero
gradient in exact arithmetic, and Adam turns the rounding noise there into full-size steps, so
those biases would compare the two paths' rounding rather than their results.
"""

import jax
import numpy as np
import pytest
from flax import nnx

import pub_optax
from pub_optax.ranking import cli
from pub_optax.ranking.data import generate_splits
from pub_optax.ranking.experiment import RunConfig, run
from pub_optax.ranking.models import MODEL_NAMES, build_model
from pub_optax.ranking.train import Trainer, train_batches

pytestmark = pytest.mark.usefixtures("fast_compiles")


def _narrow_kwargs(model_name: str) -> dict:
  """The small preset with one narrow hidden layer and the fewest experts: the sparse path
  concerns the embedding tables only, and a smaller network compiles faster."""
  kwargs = cli.model_kwargs(model_name, "small", 0.2)
  for hidden in ("expert_dims", "bottom_dims", "column_dims"):
    if hidden in kwargs:
      kwargs[hidden] = (16,)
  kwargs.update(tower_dims=(8,), **({"n_experts": 2} if "n_experts" in kwargs else {}))
  return kwargs


def _train(model_name, method, sparse, data, steps=5):
  model = build_model(
    model_name,
    data.cardinalities,
    data.numerical.shape[1],
    data.labels.shape[1],
    rngs=nnx.Rngs(params=0, dropout=1),
    norm="layer",
    **_narrow_kwargs(model_name),
  )
  tx = pub_optax.make_method(
    method, 3e-2, num_tasks=data.labels.shape[1], shared=model.shared_mask()
  )
  trainer = Trainer(model, tx, sparse_embeddings=sparse)
  params, rest, state = trainer.params, trainer.rest, tx.init(trainer.params)
  for _, batch in zip(range(steps), train_batches(data, 128, seed=0, epoch=0)):
    out = trainer.train_step(params, rest, state, batch)
    params, rest, state = out.params, out.rest, out.opt_state
  return params, state


@pytest.mark.parametrize(
  "model_name, method",
  [(m, "equal" if m == "single_task" else "pub") for m in MODEL_NAMES] + [("mmoe", "nash_mtl")],
)  # the single-task model shares nothing: PUB has nothing to balance there
def test_sparse_embeddings_train_like_dense(model_name, method):
  # Four categorical fields, not the schema's 16: tables of 10, 215, 4,642 and 100,000 ids, so
  # some compact and one stays dense, and the two programs compile in half the time.
  data = generate_splits(1000, 200, 200, seed=0, n_categorical=4)["train"]
  assert max(data.cardinalities) > 128 > min(data.cardinalities)
  dense = _train(model_name, method, False, data)
  sparse = _train(model_name, method, True, data)
  for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(sparse)):
    np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), rtol=1e-3, atol=5e-5
    )  # steps are ~3e-2


def test_sparse_embeddings_run_through_the_command(tmp_path):
  out = str(tmp_path / "run")
  assert (
    cli.main(
      [
        "train",
        "--methods",
        "pub,equal",
        "--epochs",
        "1",
        "--rows",
        "2000",
        "--batch-size",
        "256",
        "--sparse-embeddings",
        "--seeds",
        "1",
        "--no-progress",
        "--out",
        out,
      ]
    )
    == 0
  )


@pytest.mark.parametrize("method", ["adatask", "pub_clippy"])
def test_methods_without_row_sparse_support_are_refused(method, tmp_path, capsys):
  assert (
    cli.main(["train", "--methods", f"pub,{method}", "--sparse-embeddings", "--out", str(tmp_path)])
    == 2
  )
  assert f"method(s) ['{method}'] need dense table gradients" in capsys.readouterr().err
  splits = generate_splits(500, 200, 200, seed=0)
  with pytest.raises(ValueError, match="does not take row-sparse"):
    run(
      RunConfig(method=method, epochs=1, batch_size=128, sparse_embeddings=True),
      splits,
      progress=False,
    )
