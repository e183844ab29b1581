"""Multi-task image classification: Fashion-MNIST, Multi-Fashion and MultiLeNet.

``load_fashion_mnist`` reads the offline Fashion-MNIST idx files (Debian package
``dataset-fashion-mnist``), ``multi_fashion_splits`` composes the Multi-Fashion benchmark (two
items on a 36×36 canvas, one task per item), ``MultiLeNet`` is the shared LeNet with one head
per task, and ``fit`` trains it with any pub_optax transformation taking per-task gradients.

Example:
  >>> import numpy as np, pub_optax
  >>> from flax import nnx
  >>> from pub_optax import vision
  >>> rng = np.random.default_rng(0)
  >>> items = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8)
  >>> data = vision.make_multi_fashion(items, np.arange(40) % 10, n=32, seed=0)
  >>> model = vision.MultiLeNet(rngs=nnx.Rngs(0))
  >>> tx = pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask())
  >>> result = vision.fit(model, tx, {"train": data, "val": data}, epochs=1, batch_size=16)
  >>> result["best_epoch"]
  0
"""

from pub_optax.vision.fashion import CLASS_NAMES, DEFAULT_DIRECTORY, load_fashion_mnist, read_idx
from pub_optax.vision.lenet import LeNetTrunk, MultiLeNet
from pub_optax.vision.multi_fashion import (
  OFFSET,
  TASK_NAMES,
  MultiTaskImages,
  make_multi_fashion,
  multi_fashion_splits,
  overlay,
)
from pub_optax.vision.train import Trainer, batches, fit, task_losses

__all__ = [
  "CLASS_NAMES",
  "DEFAULT_DIRECTORY",
  "LeNetTrunk",
  "MultiLeNet",
  "MultiTaskImages",
  "OFFSET",
  "TASK_NAMES",
  "Trainer",
  "batches",
  "fit",
  "load_fashion_mnist",
  "make_multi_fashion",
  "multi_fashion_splits",
  "overlay",
  "read_idx",
  "task_losses",
]
