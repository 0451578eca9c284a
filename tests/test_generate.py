"""`nntrain generate`: seeded sampling from a run and from its export; bad input gets one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import nntrain
from nntrain import api, cli
from nntrain import generate as generation
from nntrain.experiments import text_gpt


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A text_gpt run of the small variant (context 32 tokens: 31 prompt bytes after the start token)."""
    model_dir = tmp_path_factory.mktemp("text_gpt")
    nntrain.train(nntrain.load_config("text_gpt", text_gpt.RUNLOCAL), str(model_dir), strategy="cpu", verbose=0)
    return model_dir


@pytest.mark.slow
def test_same_seed_same_text_also_from_the_export(run_dir, tmp_path):
    first = api.generate(str(run_dir), "import ", max_new_tokens=40, seed=7)
    assert first == api.generate(str(run_dir), "import ", max_new_tokens=40, seed=7)
    assert 0 < first["new_tokens"] <= 40 and first["prompt"] == "import "
    others = {api.generate(str(run_dir), "import ", max_new_tokens=40, seed=seed)["completion"] for seed in (1, 2)}
    assert others != {first["completion"]}  # the seed matters
    nntrain.export(str(run_dir), str(tmp_path / "export"))
    greedy = {"max_new_tokens": 20, "top_k": 1, "seed": 0}
    assert (api.generate(str(tmp_path / "export"), "def ", **greedy)
            == api.generate(str(run_dir), "def ", **greedy))


def test_text_longer_than_the_context_slides_the_window(monkeypatch):
    context = 4

    def next_byte(batch):  # a model that predicts "the byte after the last real one", and sees at most 4 tokens
        assert batch.shape == (1, context)
        probabilities = np.zeros((1, context, 257), np.float32)
        for position, token in enumerate(batch[0]):
            probabilities[0, position, (token + 1) % 256] = 1.0
        return probabilities

    monkeypatch.setattr(generation, "_load", lambda model_dir, checkpoint: (next_byte, context, 257))
    result = generation.generate("run", "ab", max_new_tokens=10, top_k=1)
    assert result["completion"] == "cdefghijkl" and result["new_tokens"] == 10


def test_top_k_and_temperature_shape_the_distribution():
    probabilities = np.array([0.5, 0.3, 0.2])
    rng = np.random.default_rng(0)
    assert {generation._sample(probabilities, 1.0, 1, rng) for _ in range(50)} == {0}
    assert {generation._sample(probabilities, 1.0, 2, rng) for _ in range(200)} == {0, 1}
    cold = [generation._sample(probabilities, 0.05, 0, rng) for _ in range(200)]
    assert cold.count(0) > 190  # near-greedy at a low temperature


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_bad_input_is_one_line(run_dir, tmp_path, capfd):
    (tmp_path / "blob.txt").write_bytes(b"GIF89a\0\0")
    md = f"--model_dir={run_dir}"
    cases = [
        (["generate", md, "--max_new_tokens=0"], "--max_new_tokens=0"),
        (["generate", md, "--prompt=" + "x" * 32], "longer than the model's context of 31 bytes"),
        (["generate", md, "--temperature=-1"], "--temperature=-1"),
        (["generate", md, "--top_k=-2"], "--top_k=-2"),
        (["generate", f"--model_dir={tmp_path}"], "neither an nntrain run"),
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
