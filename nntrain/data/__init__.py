"""Input data: sources, split selection, preprocessing and distributed tf.data pipelines.

    build(data_config, global_batch_size, strategy, seed=0) -> Datasets
    load_split(data_config, split, batch_size) -> (tf.data.Dataset, DatasetSpec)
    save_spec(spec, model_dir) -> path of dataset.json (shapes, split sizes, class names)
    copy_saved_spec(model_dir, export_dir): the run's dataset.json into an export

Owns everything between a `data.source` and the batches a model sees. It may import the foundation (`errors`,
`logs`, `quiet`, `compat`, `rundir`), `registry`, `config` and `distribute` (addresses); never `models`, `run` or
anything above.
"""

from nntrain.data.pipeline import Datasets, build, load_split
from nntrain.data.spec import DatasetSpec
from nntrain.data.spec import copy_saved as copy_saved_spec
from nntrain.data.spec import save as save_spec

__all__ = ["Datasets", "DatasetSpec", "build", "copy_saved_spec", "load_split", "save_spec"]
