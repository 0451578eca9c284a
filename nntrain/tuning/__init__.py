"""Hyperparameter search with keras-tuner over the same builders and compile path as `nntrain train`.

    search_space    what an experiment's get_search_space() declares (no TensorFlow import: experiments use it)
    scaling         the base learning rate scaled to a trial's batch size (linear, sqrt, none)
    hypermodel      keras_tuner.HyperModel: build() fills a copy of the config, fit() applies the batch size
    tuners          the tuners of registry.TUNERS, with one progress line per finished trial
    results         leaderboard, results.csv / results.json and best_config.py in model_dir
    hparams         TensorBoard HParams: hparams_config once, each trial through keras-tuner
    distributed     chief and workers: environment, a supervised chief, worker heartbeats
    search          `tune(...)`: checks, resume, local / chief / worker runs
    find_batch_size throughput of power-of-two batch sizes
    find_lr         learning-rate range test

It may import every layer below it: the foundation, `registry`, `config`, `distribute`, `data`, `models`, `run` and
`exports`; never `benchmark`, `api` or `cli`. Importing the package imports no TensorFlow: the built-in tuners
are registered by their import path (one line each), imported on first use.
"""

from nntrain.registry import TUNERS

TUNERS.add("random", "keras_tuner:RandomSearch")
TUNERS.add("bayesian", "keras_tuner:BayesianOptimization")
TUNERS.add("hyperband", "nntrain.tuning.tuners:Hyperband")
TUNERS.add("grid", "keras_tuner:GridSearch")
