"""Experiment variants, the ml_collections convention: --experiment=NAME:VARIANT and --config=FILE.py:VARIANT call
the file's get_config(VARIANT); text_gpt's sizes are its variants."""

import textwrap

from conftest import cli_failures

import nntrain
from nntrain import config as nn_config


def test_text_gpt_sizes():
    sizes = {variant: nntrain.load_config(f"text_gpt:{variant}") for variant in ("tiny", "default", "small", "base")}
    assert nntrain.load_config("text_gpt").to_dict() == {**sizes["default"].to_dict(), "experiment": "text_gpt"}
    assert sizes["small"].experiment == "text_gpt:small"
    shapes = {v: (c.model.embed_dim, c.model.num_layers, c.model.num_heads, c.data.sequence_length)
              for v, c in sizes.items()}
    assert shapes == {"tiny": (32, 1, 4, 32), "default": (128, 3, 4, 128), "small": (384, 6, 6, 256),
                      "base": (768, 12, 12, 1024)}  # base: GPT-2 small's shape


def test_config_file_with_a_variant(tmp_path):
    path = tmp_path / "sized.py"
    path.write_text(textwrap.dedent("""
        from nntrain.config import base_config
        VARIANTS = ("narrow", "wide")
        def get_config(variant="narrow"):
            config = base_config()
            config.train.batch_size = {"narrow": 8, "wide": 64}[variant]
            return config
    """))
    assert nn_config.resolve(f"{path}:wide").train.batch_size == 64
    assert nn_config.resolve(str(path)).train.batch_size == 8
    assert nn_config.split_variant(f"{path}:wide") == (str(path), "wide")
    assert nn_config.split_variant("gs://bucket/x.py") == ("gs://bucket/x.py", None)


def test_unknown_variants_in_one_line(tmp_path, capfd):
    cases = [
        ("unknown variant", ["preflight", "--experiment=text_gpt:huge"],
         "experiment 'text_gpt' has no variant 'huge': its variants are tiny, default, small, base"),
        ("experiment without variants", ["bench", "--experiment=xor:big"],
         "experiment 'xor' has no variant 'big': it has none: give 'xor' alone"),
        ("train too", ["train", "--experiment=text_gpt:huge", f"--model_dir={tmp_path}/run"], "no variant 'huge'"),
    ]
    assert cli_failures(cases, tmp_path, capfd) == []
    assert not (tmp_path / "run").exists()
