"""The CLI as a new user meets it: strict flags, --version, `config`, `--experiment=X --help`, `predict`, and
runs that stay usable from another working directory."""

from __future__ import annotations

import configparser
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_failures
from corpora import TINY_GPT
from PIL import Image

import nntrain
from nntrain import cli
from nntrain import config as nn_config

REPO = Path(__file__).resolve().parent.parent
TINY = ["--config.train.epochs=1", "--config.train.steps_per_epoch=4", "--config.train.batch_size=4"]


def _cli(args: list[str], capfd) -> tuple[str, str]:
    """`nntrain ARGS` in this process; its stdout and stderr (it must succeed)."""
    with pytest.raises(SystemExit) as done:
        cli.run(["nntrain", *args])
    out, err = capfd.readouterr()
    assert done.value.code in (0, None), err[-3000:]
    return out, err


def test_a_flag_of_another_command_or_an_ignored_override_is_refused(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = ["--experiment=xor", f"--model_dir={tmp_path}/run"]
    assert cli_failures([
        ("train --seed", ["train", *run, "--seed=7"], "--seed is a flag of `generate`, not of `train`; the "
                                                      "config's is --config.seed=VALUE"),
        ("evaluate --max_trials", ["evaluate", f"--model_dir={tmp_path}/run", "--max_trials=3"],
         "--max_trials is a flag of `tune`, not of `evaluate`"),
        ("export --tuner", ["export", f"--model_dir={tmp_path}/run", "--export_dir=x", "--tuner=grid"],
         "--tuner is a flag of `tune`"),
        ("evaluate with a data override", ["evaluate", f"--model_dir={tmp_path}/run",
                                           "--config.data.eval_split=train"],
         "`evaluate` uses the run's saved config.json and applies no overrides: leave out "
         "--config.data.eval_split=train"),
        ("export with a data override", ["export", f"--model_dir={tmp_path}/run", "--export_dir=x",
                                         "--config.data.source=idx:elsewhere"], "applies no overrides"),
    ], tmp_path, capfd) == []


def test_each_command_lists_every_flag_it_reads():
    """The flag tables that strict flags and --help use hold every FLAGS.NAME a command's function reads."""
    for name, command in cli.COMMANDS.items():
        source = inspect.getsource(command.run)
        read = set(re.findall(r"FLAGS\.(\w+)", source)) | set(re.findall(r'_require\("(\w+)"\)', source))
        assert read <= {*command.flags, "json"}, (name, read - set(command.flags))


def test_version_names_nntrain_and_its_stack_without_importing_tensorflow():
    code = ("import sys; from nntrain import cli\ntry:\n    cli.run(['nntrain', '--version'])\nexcept SystemExit:\n"
            "    pass\nassert 'tensorflow' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    version = setup["metadata"]["version"]
    assert nntrain.__version__ == version
    assert result.stdout.startswith(f"nntrain {version} (tensorflow 2.") and "keras 3." in result.stdout


def test_config_prints_the_resolved_config(capfd):
    out, _ = _cli(["config", "--experiment=xor", "--config.train.epochs=2", "--json"], capfd)
    resolved = json.loads(out)
    assert resolved["train"]["epochs"] == 2 and resolved["train"]["batch_size"] == 4  # the override; xor's own
    assert resolved["data"]["source"] == "generated:xor" and resolved["experiment"] == "xor"
    out, _ = _cli(["config", "--experiment=xor", "--config.model.hidden_sizes=16,16"], capfd)
    assert "model.hidden_sizes=16,16" in out.splitlines() and "train.batch_size=4" in out.splitlines()


def test_help_with_an_experiment_shows_its_values(capsys):
    for args, batch_size in ((["train", "--help"], 128), (["train", "--experiment=xor", "--help"], 4),
                             (["tune", "--help", "--experiment", "xor", "--config.train.batch_size=2"], 2)):
        with pytest.raises(SystemExit):
            cli.run(["nntrain", *args])
        out = capsys.readouterr().out
        assert f"  train.batch_size={batch_size}\n" in out, args
    assert "Config of xor" in out and "  model.hidden_sizes=8\n" in out


def test_relative_data_paths_are_stored_absolute_and_urls_untouched():
    config = nn_config.base_config()
    for source, stored in (("idx:mnist", "idx:/work/dir/mnist"), ("csv:../d/{split}.csv", "csv:/work/d/{split}.csv"),
                           ("text:corpus/*.txt", "text:/work/dir/corpus/*.txt"), ("tfds:mnist", "tfds:mnist"),
                           ("tfrecord:gs://b/train-*", "tfrecord:gs://b/train-*"), ("npz:ram://x.npz", "npz:ram://x.npz"),
                           ("parity:3", "parity:3"), ("generated:xor", "generated:xor"), ("synthetic", "synthetic")):
        config.data.source = source
        config.data.data_dir = "tfds_data"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("os.getcwd", lambda: "/work/dir")
            nn_config.absolute_paths(config)
        assert (config.data.source, config.data.data_dir) == (stored, "/work/dir/tfds_data"), source


@pytest.mark.slow
def test_a_run_on_a_relative_path_is_evaluated_exported_and_resumed_from_elsewhere(tmp_path, capfd, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype(np.float32), rng.integers(0, 2, 32)
    (tmp_path / "project").mkdir()
    np.savez(tmp_path / "project" / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    monkeypatch.chdir(tmp_path / "project")
    run = ["--experiment=mnist_mlp", "--model_dir=run", "--config.data.source=npz:data.npz",
           "--config.data.train_split=train", "--config.data.eval_split=test", "--config.model.hidden_sizes=4",
           "--strategy=cpu", *TINY]
    _cli(["train", *run], capfd)
    saved = json.loads((tmp_path / "project" / "run" / "config.json").read_text())
    assert saved["data"]["source"] == f"npz:{tmp_path / 'project' / 'data.npz'}"
    monkeypatch.chdir(tmp_path)
    out, _ = _cli(["evaluate", "--model_dir=project/run", "--json"], capfd)
    assert 0 <= json.loads(out)["accuracy"] <= 1
    _cli(["export", "--model_dir=project/run", "--export_dir=exported"], capfd)
    _, err = _cli(["train", "--config=project/run/config.json", "--model_dir=project/run",
                   "--config.train.epochs=2", "--strategy=cpu"], capfd)
    assert json.loads((tmp_path / "project" / "run" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2


def _pngs(root: Path) -> None:
    """8 images of 6x6 per class: `dark` ones near 0, `light` ones near 255."""
    rng = np.random.default_rng(0)
    for name, level in (("dark", 20), ("light", 235)):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(level + rng.integers(-10, 10, (6, 6)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_predict_answers_for_image_files_a_folder_and_arrays(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _pngs(tmp_path / "photos")
    _cli(["train", "--experiment=mnist_mlp", "--model_dir=run", "--config.data.source=images:photos",
          "--config.data.image_size=6,6", "--config.data.channels=1", "--config.data.train_split=train",
          "--config.data.eval_split=train", "--config.model.hidden_sizes=8", "--strategy=cpu",
          "--config.train.epochs=3", "--config.train.batch_size=4", "--config.optimizer.learning_rate=0.05"], capfd)
    out, _ = _cli(["predict", "--model_dir=run", "--input=photos"], capfd)
    answers = [json.loads(line) for line in out.splitlines()]
    assert [answer["input"] for answer in answers] == sorted(str(p) for p in Path("photos").rglob("*.png"))
    assert [answer["class_name"] for answer in answers] == ["dark"] * 8 + ["light"] * 8
    assert all(answer["class_index"] == ["dark", "light"].index(answer["class_name"]) for answer in answers)
    assert all(0.5 <= answer["probability"] <= 1 for answer in answers)
    out, _ = _cli(["predict", "--model_dir=run", "--input=photos/light/0.png", "--json"], capfd)
    assert json.loads(out)["predictions"] == [answers[8]]
    pixels = np.stack([np.asarray(Image.open(f"photos/{name}/0.png"))[..., None] for name in ("dark", "light")])
    predictions = nntrain.predict("run", pixels)
    assert predictions.predicted.tolist() == [0, 1] and predictions.labels is None
    assert predictions.outputs[1, 1] == pytest.approx(answers[8]["probability"], abs=1e-6)
    Path("notes.txt").write_text("a line\n")
    assert cli_failures([
        ("text for an image model", ["predict", "--model_dir=run", "--input=notes.txt"],
         "--input=notes.txt: a text file, but this model takes uint8 examples of shape (6, 6, 1)"),
        ("no such input", ["predict", "--model_dir=run", "--input=nothing"], "--input=nothing: no such file"),
        ("a byte-level model", ["predict", "--model_dir=run", "--input=notes.txt", "--top_k=3"],
         "--top_k is a flag of `generate`"),
    ], tmp_path, capfd) == []
    with pytest.raises(nntrain.NntrainError, match="uint8 images"):
        nntrain.predict("run", pixels / 255.0)
    with pytest.raises(nntrain.NntrainError, match=r"shape \(6, 6\)"):
        nntrain.predict("run", pixels[..., 0])


@pytest.mark.slow
def test_predict_reads_a_csv_and_a_text_file(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 2},{(i % 2) * 3 + 0.1 * i},{i % 2}\n" for i in range(16))
    Path("train.csv").write_text("a,b,label\n" + rows)
    _cli(["train", "--experiment=mnist_mlp", "--model_dir=run", "--config.data.source=csv:train.csv",
          "--config.data.train_split=train", "--config.data.eval_split=train", "--config.model.hidden_sizes=8",
          "--strategy=cpu", "--config.train.epochs=4", "--config.train.batch_size=4"], capfd)
    Path("new.csv").write_text("b,a\n3.5,1\n0.2,0\n")  # the columns in another order, no label
    out, _ = _cli(["predict", "--model_dir=run", "--input=new.csv"], capfd)
    answers = [json.loads(line) for line in out.splitlines()]
    assert [answer["input"] for answer in answers] == ["new.csv:2", "new.csv:3"]
    assert [answer["class_index"] for answer in answers] == [1, 0]


@pytest.mark.slow
def test_verbosity_governs_nntrain_log_lines(tmp_path):
    train = [sys.executable, "-m", "nntrain.cli", "train", "--experiment=xor", "--strategy=cpu", *TINY]
    loud, quiet = (subprocess.run([*train, f"--model_dir={tmp_path}/{name}", *flags], capture_output=True, text=True,
                                  timeout=300) for name, flags in (("loud", []), ("quiet", ["-v", "-1"])))
    assert loud.returncode == quiet.returncode == 0, quiet.stderr[-2000:]
    assert "trainer.py" in loud.stderr and "done in" in loud.stderr
    assert "trainer.py" not in quiet.stderr and "done in" not in quiet.stderr and "4/4" in quiet.stdout


C_RECORDS = (".cc:", "absl::InitializeLog", "XNNPACK", "cuInit", "oneDNN")  # TensorFlow's C++ log records


@pytest.mark.slow
def test_tensorflow_records_stay_off_the_terminal_in_a_library_call_export_and_generate(tmp_path, capfd):
    small_gpt = [f"--config.{key}={value}" for key, value in TINY_GPT.items()]
    _cli(["train", "--experiment=text_gpt", "--strategy=cpu", f"--model_dir={tmp_path}/gpt", *small_gpt], capfd)
    _cli(["train", "--experiment=xor", "--strategy=cpu", f"--model_dir={tmp_path}/xor", *TINY], capfd)
    env = {key: value for key, value in os.environ.items() if key not in ("NNTRAIN_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    library = (f"import nntrain; print(nntrain.predict({str(tmp_path / 'xor')!r}, limit=2).predicted); "
               f"nntrain.export({str(tmp_path / 'xor')!r}, {str(tmp_path / 'lib_export')!r}, export_format='tflite')")
    commands = {"library": [sys.executable, "-c", library],
                "export": [sys.executable, "-m", "nntrain.cli", "export", f"--model_dir={tmp_path}/xor",
                           f"--export_dir={tmp_path}/cli_export", "--format=tflite"],
                "generate": [sys.executable, "-m", "nntrain.cli", "generate", f"--model_dir={tmp_path}/gpt",
                             "--max_new_tokens=3"]}
    for name, command in commands.items():
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not [line for line in result.stderr.splitlines() if any(part in line for part in C_RECORDS)], (
            name, result.stderr[-3000:])


def test_a_user_callback_sees_one_train_batch_end_per_execution_as_the_readme_says(tmp_path):
    """README: on_train_batch_end runs once per execution of steps_per_execution steps, with the block's last step
    as `batch`; steps_per_execution=1 calls it every step."""
    import keras

    class Batches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(batch)

    for steps_per_execution, expected in ((4, [3, 7, 11]), (1, list(range(12)))):
        batches = Batches()
        config = nntrain.load_config("xor", {"train.epochs": 1, "train.steps_per_epoch": 12,
                                             "train.steps_per_execution": steps_per_execution})
        nntrain.train(config, str(tmp_path / str(steps_per_execution)), strategy="cpu", verbose=0,
                      callbacks=[batches])
        assert batches.seen == expected
    readme = (REPO / "README.md").read_text()
    assert "`on_train_batch_end` once\nper execution of `train.steps_per_execution` steps" in readme
