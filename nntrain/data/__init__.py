"""Input data: sources, split selection, preprocessing and distributed tf.data pipelines.

    build(data_config, global_batch_size, strategy, seed=0) -> Datasets
    load_split(data_config, split, batch_size) -> (tf.data.Dataset, DatasetSpec)
"""

from nntrain.data.pipeline import Datasets, build, load_split
from nntrain.data.spec import DatasetSpec

__all__ = ["Datasets", "DatasetSpec", "build", "load_split"]
