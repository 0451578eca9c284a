"""Text the tests train on: files every machine has, small enough that a tiny run spends its time training."""

import sysconfig

from nntrain.experiments import text_gpt

# The 20 files of the standard library's email package (0.4 MB), not text_gpt's default (the whole library's *.py).
EMAIL_PY = f"text:{sysconfig.get_paths()['stdlib']}/email/*.py"
TINY_GPT = {**text_gpt.RUNLOCAL, "data.source": EMAIL_PY}  # text_gpt's tiny size on that corpus
