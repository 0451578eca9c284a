"""precision=auto: bfloat16 on CPUs with bf16 matmul instructions, float32 on the others, said in the start-up line."""

import keras
import pytest
from absl import flags as absl_flags

import nntrain
from nntrain.distribute import execution
from nntrain.distribute.execution import (
    cpu_flags as read_cpu_flags,  # conftest pins execution.cpu_flags to none in tests
)

EPYC_FLAGS = "fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni".split()
AMX_FLAGS = "fpu sse2 avx2 amx_tile amx_bf16 amx_int8".split()
OLD_FLAGS = "fpu sse2 avx2 avx512f avx512_vnni".split()


@pytest.mark.parametrize("flags, precision, said", [
    (EPYC_FLAGS, "mixed_bfloat16", "auto: this CPU has avx512_bf16"),
    (AMX_FLAGS, "mixed_bfloat16", "auto: this CPU has amx_bf16"),
    (OLD_FLAGS, "float32", "auto: this CPU has no avx512_bf16 or amx_bf16"),
    ([], "float32", "auto: this CPU has no avx512_bf16 or amx_bf16"),
])
def test_cpu_choice_from_its_flags(flags, precision, said):
    assert execution.auto_precision("cpu", flags) == (precision, said)


def test_accelerators_ignore_cpu_flags():
    assert execution.auto_precision("tpu", OLD_FLAGS)[0] == "mixed_bfloat16"
    assert execution.auto_precision("gpu", EPYC_FLAGS)[0] == "mixed_float16"


def test_cpu_flags_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 sse2\n\nprocessor\t: 1\nflags\t\t: fpu amx_bf16\n")
    monkeypatch.setattr(execution, "CPUINFO", str(cpuinfo))
    assert read_cpu_flags() == {"fpu", "avx512_bf16", "sse2", "amx_bf16"}
    monkeypatch.setattr(execution, "CPUINFO", str(tmp_path / "missing"))
    assert read_cpu_flags() == set()


@pytest.mark.parametrize("flags, precision", [(EPYC_FLAGS, "mixed_bfloat16"), (OLD_FLAGS, "float32")])
def test_start_up_line_says_the_choice(flags, precision, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(execution, "cpu_flags", lambda: set(flags))
    absl_flags.FLAGS.unparse_flags()  # an in-process CLI test before this one leaves absl's flags parsed: library logs
    config = nntrain.load_config("text_gpt:tiny", {"train.epochs": 1, "train.steps_per_epoch": 2})
    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    assert f"precision {precision} (auto: this CPU has " in capfd.readouterr().err
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.get_layer("token_embedding").dtype_policy.name == precision  # what the run trained with
