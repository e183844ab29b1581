"""MultiLeNet: the shared LeNet trunk with one linear classifier per task (MGDA, Pareto MTL).

Sener & Koltun (2018) and Lin et al. (2019) train MultiMNIST / Multi-Fashion with a small
LeNet shared by all tasks — 5×5 convolution, ReLU, 2×2 max-pooling, 5×5 convolution, ReLU, 2×2
max-pooling, a 50-unit dense layer with ReLU — and a task-specific head on its 50 features.
Here each head is one linear layer to the class logits. Everything in ``trunk`` is shared;
``heads[k]`` only receives gradient from task ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel

__all__ = ["LeNetTrunk", "MultiLeNet"]


class LeNetTrunk(nnx.Module):
  """Conv 5×5 → ReLU → max-pool 2 → conv 5×5 → ReLU → max-pool 2 → dense → ReLU.

  Convolutions use ``VALID`` padding, as in the PyTorch code of MGDA and Pareto MTL: a 36×36
  canvas gives 32 → 16 → 12 → 6, so ``6·6·channels[1]`` features enter the dense layer.

  Args:
    image_shape: ``(H, W, C)`` of the inputs.
    channels: output channels of the two convolutions.
    kernel_size: side of the square kernels.
    hidden: width of the dense layer (the features every head sees).
    rngs: NNX random streams.

  Returns:
    A module ``trunk(images (B, H, W, C)) -> (B, hidden)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> LeNetTrunk((36, 36, 1), rngs=nnx.Rngs(0))(jnp.zeros((2, 36, 36, 1))).shape
    (2, 50)
  """

  def __init__(
    self,
    image_shape: Sequence[int] = (36, 36, 1),
    channels: Sequence[int] = (10, 20),
    kernel_size: int = 5,
    hidden: int = 50,
    *,
    rngs: nnx.Rngs,
  ):
    height, width, in_channels = (int(d) for d in image_shape)
    c1, c2 = (int(c) for c in channels)
    size = []
    for side in (height, width):
      side = (side - kernel_size + 1) // 2
      side = (side - kernel_size + 1) // 2
      if side < 1:
        raise ValueError(
          f"image_shape {tuple(image_shape)} is too small for two {kernel_size}×"
          f"{kernel_size} convolutions with 2×2 pooling"
        )
      size.append(side)
    self.conv1 = nnx.Conv(in_channels, c1, (kernel_size, kernel_size), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (kernel_size, kernel_size), padding="VALID", rngs=rngs)
    self.dense = nnx.Linear(size[0] * size[1] * c2, hidden, rngs=rngs)
    self.out_dim = int(hidden)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = nnx.max_pool(jax.nn.relu(self.conv1(images)), (2, 2), strides=(2, 2))
    x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), strides=(2, 2))
    return jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))


class MultiLeNet(MultiTaskModel):
  """Shared LeNet trunk and one linear head per task: ``model(images) -> (B, n_tasks, n_classes)``.

  Shared (mask ``True``): every parameter under ``trunk``. Task-specific (``False``):
  ``heads[k]``, which only task ``k``'s loss reaches.

  Args:
    n_tasks: number of tasks (2 for Multi-Fashion), >= 1.
    n_classes: classes per task.
    image_shape: ``(H, W, C)`` of the inputs; 36×36×1 for Multi-Fashion canvases.
    channels, kernel_size, hidden: trunk sizes, see :class:`LeNetTrunk`.
    rngs: NNX random streams.

  Returns:
    A module taking float images ``(B, H, W, C)`` (or ``(B, H, W)`` for one channel) and
    returning float32 logits ``(B, n_tasks, n_classes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MultiLeNet(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((4, 36, 36, 1))).shape
    (4, 2, 10)
    >>> mask = model.shared_mask()
    >>> mask["trunk"]["conv1"]["kernel"].get_value(), mask["heads"][1]["bias"].get_value()
    (True, False)
  """

  def __init__(
    self,
    n_tasks: int = 2,
    n_classes: int = 10,
    *,
    image_shape: Sequence[int] = (36, 36, 1),
    channels: Sequence[int] = (10, 20),
    kernel_size: int = 5,
    hidden: int = 50,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    if int(n_classes) != n_classes or n_classes < 2:
      raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    self.n_classes = int(n_classes)
    self.trunk = LeNetTrunk(image_shape, channels, kernel_size, hidden, rngs=rngs)
    self.heads = nnx.List(
      [nnx.Linear(self.trunk.out_dim, self.n_classes, rngs=rngs) for _ in range(self.n_tasks)]
    )

  def _is_shared(self, path: tuple) -> bool:
    return path[0] == "trunk"

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim == 3:
      images = images[..., None]
    features = self.trunk(images)
    return jnp.stack([head(features) for head in self.heads], axis=1)
