"""Ranking data: the `RankingData` container, real-format loaders, the generator, batching.

- `types`: `RankingData` and cardinality helpers.
- `aliexpress`: processed AliExpress CSV (82 columns) and the raw Tianchi release.
- `aliccp`: raw Ali-CCP ``sample_skeleton`` / ``common_features`` files.
- `synthetic`: realistic AliExpress-schema data with a known ground truth.
- `batching`: in-memory and streaming mini-batches, padding for evaluation.
"""

from pub_optax.ranking.data.aliccp import AITM_SPARSE_FIELDS, load_aliccp
from pub_optax.ranking.data.aliexpress import (
  aliexpress_csv_cardinalities,
  iter_aliexpress_csv,
  load_aliexpress,
  load_aliexpress_raw,
  read_aliexpress_csv,
)
from pub_optax.ranking.data.batching import (
  iterate_batches,
  num_batches,
  pad_batch,
  stream_csv_batches,
)
from pub_optax.ranking.data.synthetic import (
  SyntheticConfig,
  SyntheticTruth,
  generate_aliexpress,
  generate_splits,
  iter_aliexpress_chunks,
  write_aliexpress_csv,
  write_aliexpress_csv_chunks,
)
from pub_optax.ranking.data.types import (
  DataError,
  RankingData,
  cardinalities_of,
  concatenate,
  require_both_classes,
  shared_cardinalities,
  with_cardinalities,
)

__all__ = [
  "AITM_SPARSE_FIELDS",
  "DataError",
  "RankingData",
  "SyntheticConfig",
  "SyntheticTruth",
  "aliexpress_csv_cardinalities",
  "cardinalities_of",
  "concatenate",
  "generate_aliexpress",
  "generate_splits",
  "iter_aliexpress_chunks",
  "iter_aliexpress_csv",
  "iterate_batches",
  "load_aliccp",
  "load_aliexpress",
  "load_aliexpress_raw",
  "num_batches",
  "pad_batch",
  "read_aliexpress_csv",
  "require_both_classes",
  "shared_cardinalities",
  "stream_csv_batches",
  "with_cardinalities",
  "write_aliexpress_csv",
  "write_aliexpress_csv_chunks",
]
