"""The shipped experiments, one file each: `get_config()` (and optionally `get_search_space()`).

They ship inside the package so that a pip or Colab install has them; `--experiment=NAME` finds them here, and
`--experiment=PATH.py` runs any file of the same form.

This directory sits at the top of the repository and is installed as the package `nntrain.experiments` (setup.cfg
`package_dir`). Experiment files may import `config` and `tuning.search_space` (and any layer below them).
"""
