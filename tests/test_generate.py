"""`nntrain generate`: seeded sampling from a run and from its export; bad input gets one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from corpora import TINY_GPT

import nntrain
from nntrain import api, cli
from nntrain.data import text
from nntrain.exports import artifacts
from nntrain.exports import generate as generation

CONTEXT = TINY_GPT["data.sequence_length"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A text_gpt run of the small variant (context 32 tokens: 31 prompt bytes after the start token)."""
    model_dir = tmp_path_factory.mktemp("text_gpt")
    nntrain.train(nntrain.load_config("text_gpt", TINY_GPT), str(model_dir), strategy="cpu", verbose=0)
    return model_dir


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> dict:
    """The run's export with a TFLite file: `nntrain.export`'s result."""
    return nntrain.export(str(run_dir), str(tmp_path_factory.mktemp("text_gpt_export") / "export"),
                          export_format="tflite")


@pytest.fixture(scope="module")
def export_dir(exported) -> Path:
    return Path(exported["export_dir"])


@pytest.mark.slow
def test_same_seed_same_text_also_from_the_export(run_dir, export_dir):
    first = api.generate(str(run_dir), "import ", max_new_tokens=40, seed=7)
    assert first == api.generate(str(run_dir), "import ", max_new_tokens=40, seed=7)
    assert 0 < first["new_tokens"] <= 40 and first["prompt"] == "import "
    assert api.generate(str(run_dir), "import ", max_new_tokens=40, seed=1) != first  # the seed matters
    # The export's generate signature gives the same text: sampled, tempered, top-k, top-p, past the context.
    for settings in ({"max_new_tokens": 45, "temperature": 0.7, "top_k": 5, "seed": 3},
                     {"max_new_tokens": 50, "top_p": 0.9, "seed": 11}):
        assert api.generate(str(export_dir), "def ", **settings) == api.generate(str(run_dir), "def ", **settings)
    long_prompt = "import os\n" * 5  # 50 bytes: longer than the context of 32 tokens
    from_run = api.generate(str(run_dir), long_prompt, max_new_tokens=10, seed=2)
    assert from_run == api.generate(str(export_dir), long_prompt, max_new_tokens=10, seed=2)


@pytest.mark.slow
def test_an_unchanged_run_keeps_its_sampler_and_a_rewritten_model_is_read_again(run_dir, tmp_path):
    """A second call on an unchanged run reuses the loaded, compiled sampler; a model.keras written since is loaded."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    generation._loaded.cache_clear()
    first = api.generate(str(run), "def ", max_new_tokens=30, seed=5)
    assert api.generate(str(run), "def ", max_new_tokens=30, seed=5) == first
    assert generation._loaded.cache_info()[:2] == (1, 1)  # one hit, one miss
    model = keras.saving.load_model(run / "model.keras")
    model.set_weights([weight * 0 for weight in model.get_weights()])  # every byte equally likely
    model.save(run / "model.keras")
    assert api.generate(str(run), "def ", max_new_tokens=30, seed=5) != first
    assert generation._loaded.cache_info()[:2] == (1, 2)


@pytest.mark.slow
def test_export_scores_token_ids_and_tflite_takes_them(exported):
    """Export scores the eval split through serve_tokens, and TFLite converts that signature (no string ops)."""
    rows = {row["artifact"]: row for row in exported["artifacts"]}
    assert abs(rows["saved_model"]["accuracy"] - rows["model.keras"]["accuracy"]) <= 1e-6
    assert abs(rows["model.tflite"]["accuracy"] - rows["saved_model"]["accuracy"]) <= 1e-6
    bits = [rows[name]["bits_per_byte"] for name in ("model.keras", "saved_model", "model.tflite")]
    assert 1 < bits[0] < 8.1 and max(bits) - min(bits) <= 1e-4, bits  # the same model, scored three ways
    assert "bits_per_byte" in artifacts.format_table(exported).splitlines()[1]
    interpreter = tf.lite.Interpreter(model_path=exported["tflite"])
    assert interpreter.get_signature_list()["serve_tokens"]["inputs"] == ["token_ids"]


def _spec_window(prompt: bytes, context: int) -> list[int]:
    """The tokens of a prompt, written out: END_OF_FILE, its bytes; the last `context`, zero-padded."""
    tokens = [text.END_OF_FILE, *prompt][-context:]
    return tokens + [0] * (context - len(tokens))


PROMPTS = [b"def ", b"", "h\u00e9llo \u2603 w\u00f6rld".encode(), b"\xff\xfe not UTF-8", b"import os\n" * 5]


def test_prompts_are_tokenized_as_training_tokenizes_a_file(tmp_path):
    """A prompt's tokens are those of a file that starts with it, in the packed training stream."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"first file\n")
    second.write_bytes(PROMPTS[2] + b" and more")
    inputs = [int(x[0]) for x, _ in text.pack([str(first), str(second)], 1).as_numpy_iterator()]
    window, lengths = text.prompt_window(tf.constant([PROMPTS[2]]), 64)
    start = len(first.read_bytes())  # the END_OF_FILE after the first file
    assert window.numpy()[0, :lengths[0]].tolist() == inputs[start:start + 1 + len(PROMPTS[2])]
    window, lengths = text.prompt_window(tf.constant(PROMPTS), 8)
    assert window.numpy().tolist() == [_spec_window(prompt, 8) for prompt in PROMPTS]
    assert lengths.numpy().tolist() == [min(len(prompt) + 1, 8) for prompt in PROMPTS]


# A client: TensorFlow, Keras and numpy only. The SavedModel on raw prompts against model.keras on token ids.
CLIENT = """
import json, sys
import keras
import numpy as np
import tensorflow as tf
export, request = sys.argv[1], json.load(open(sys.argv[2]))
prompts = [prompt.encode("latin-1") for prompt in request["prompts"]]
answers = tf.saved_model.load(export + "/saved_model").signatures["serving_default"](prompts=tf.constant(prompts))
model = keras.saving.load_model(export + "/model.keras")
expected = model.predict(np.array(request["ids"], np.int32), verbose=0)[np.arange(len(prompts)), request["last"]]
assert not any(name.startswith("nntrain") for name in sys.modules)
print(json.dumps({"max_diff": float(np.abs(answers["probabilities"].numpy() - expected).max()),
                  "shape": list(answers["probabilities"].shape), "argmax": expected.argmax(-1).tolist(),
                  "next_token": answers["next_token"].numpy().tolist(),
                  "next_byte": [b.decode("latin-1") for b in answers["next_byte"].numpy()]}))
"""


GENERATE_CLIENT = """
import json, sys
import tensorflow as tf
generate = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["generate"]
texts = generate(prompts=tf.constant([b"def ", b"import "]), max_new_tokens=tf.constant(30),
                 temperature=tf.constant(0.8), top_k=tf.constant(40), top_p=tf.constant(1.0), seed=tf.constant(4))
assert not any(name.startswith("nntrain") for name in sys.modules)
print(json.dumps([t.decode("latin-1") for t in texts["text"].numpy()]))
"""


@pytest.mark.slow
def test_export_generates_in_a_process_without_nntrain(run_dir, export_dir, tmp_path):
    served = subprocess.run([sys.executable, "-c", GENERATE_CLIENT, str(export_dir)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    texts = json.loads(served.stdout.splitlines()[-1])
    settings = {"max_new_tokens": 30, "temperature": 0.8, "top_k": 40, "seed": 4}
    expected = [api.generate(str(run_dir), prompt, **settings)["completion"] for prompt in ("def ", "import ")]
    assert [t.encode("latin-1").decode("utf-8", errors="replace") for t in texts] == expected
    assert all(0 < len(t) <= 30 for t in texts)


@pytest.mark.slow
def test_export_serves_raw_text_in_a_process_without_nntrain(export_dir, tmp_path):
    window, lengths = text.prompt_window(tf.constant(PROMPTS), CONTEXT)  # the ids nntrain trains on
    assert window.numpy().tolist() == [_spec_window(prompt, CONTEXT) for prompt in PROMPTS]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"prompts": [prompt.decode("latin-1") for prompt in PROMPTS],
                                   "ids": window.numpy().tolist(), "last": (lengths.numpy() - 1).tolist()}))
    served = subprocess.run([sys.executable, "-c", CLIENT, str(export_dir), str(request)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    result = json.loads(served.stdout.splitlines()[-1])
    assert result["shape"] == [len(PROMPTS), text.VOCAB_SIZE] and result["max_diff"] <= 1e-6, result
    assert result["next_token"] == result["argmax"]
    assert result["next_byte"] == [chr(t) if t < text.END_OF_FILE else "" for t in result["argmax"]]
    shown = subprocess.run([str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir",
                            str(export_dir / "saved_model"), "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    for signature, inputs in (("serving_default", "inputs['prompts']"), ("serve_tokens", "inputs['token_ids']"),
                              ("generate", "inputs['top_k']")):
        assert inputs in shown.stdout.split(f"signature_def['{signature}']")[1].split("Method name")[0]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_bad_input_is_one_line(run_dir, tmp_path, capfd):
    (tmp_path / "blob.txt").write_bytes(b"GIF89a\0\0")
    module = tf.Module()  # an export that is not a byte-level language model
    module.serve = tf.function(lambda features: {"probabilities": tf.nn.softmax(features)},
                               input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "classifier"), signatures={"serving_default": module.serve})
    md = f"--model_dir={run_dir}"
    cases = [
        (["generate", md, "--max_new_tokens=0"], "--max_new_tokens=0"),
        (["generate", md, "--top_p=0"], "--top_p=0.0: it must be in (0, 1]"),
        (["generate", md, "--seed=-1"], "--seed=-1: it must be in [0, 2147483647]"),
        (["generate", md, "--temperature=-1"], "--temperature=-1"),
        (["generate", md, "--top_k=-2"], "--top_k=-2"),
        (["generate", f"--model_dir={tmp_path}"], "neither an nntrain run"),
        (["generate", f"--model_dir={tmp_path}/classifier"], "not a byte-level language model (its SavedModel has "
                                                              "no serve_tokens signature)"),
        (["train", "--experiment=text_gpt", f"--model_dir={tmp_path}/run",
          f"--config.data.source=text:{tmp_path}/*.md"], "matches no files"),
        (["train", "--experiment=text_gpt", f"--model_dir={tmp_path}/run",
          f"--config.data.source=text:{tmp_path}/*.txt", "--config.data.train_split=train"], "blob.txt is a binary"),
    ]
    before = _snapshot(tmp_path), _snapshot(run_dir)
    for args, phrase in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["nntrain", *args])
        out, err = capfd.readouterr()
        lines = [line for line in err.splitlines() if "error" in line.lower()]
        assert exit_info.value.code not in (0, None), args
        assert "Traceback" not in err and len(lines) == 1 and phrase in lines[0], (args, err)
    assert (_snapshot(tmp_path), _snapshot(run_dir)) == before


@pytest.mark.slow
def test_cli_prints_the_text(run_dir, capfd):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "generate", f"--model_dir={run_dir}", "--prompt=for ", "--max_new_tokens=10",
                 "--seed=3"])
    assert exit_info.value.code in (0, None)
    expected = api.generate(str(run_dir), "for ", max_new_tokens=10, seed=3)
    assert capfd.readouterr().out == "for " + expected["completion"] + "\n"
