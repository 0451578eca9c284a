"""The shipped experiments, one file each: `get_config()` (and optionally `get_search_space()`).

They ship inside the package so that a pip or Colab install has them; `--experiment=NAME` finds them here, and
`--experiment=PATH.py` runs any file of the same form.
"""
