"""Config conventions: errors before TensorFlow, locked base sections, `--config=PATH.py|RUN/config.json`, help."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nntrain import cli
from nntrain import config as nn_config
from nntrain.errors import NntrainError

TYPO_EXPERIMENT = """
from nntrain.experiments.xor import get_config as xor_config


def get_config():
    config = xor_config()
    config.train.batchsize = 2
    return config
"""


def _run_without_tensorflow(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`nntrain ARGS` in a fresh interpreter that reports whether TensorFlow got imported."""
    code = textwrap.dedent(f"""
        import sys
        from nntrain import cli
        try:
            cli.run(["nntrain", *{args!r}])
        except SystemExit as e:
            print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
            sys.exit(e.code)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("args, phrase", [
    (["--experiment=xor", "--config.train.batchsize=2"], "did you mean 'train.batch_size'"),
    (["--experiment=xor", "--config.optimizer.learning_rate=fast"], "a number expected"),
    (["--experiment=xor", "--config.train.epochs=0"], "config.train.epochs=0 is not allowed: it must be > 0"),
    (["--config=typo.py"], "line 7 (config.train.batchsize = 2): unknown config key 'train.batchsize': "
                           "did you mean 'train.batch_size'?"),
    (["--experiment=xor", "--config=typo.py"], "either --experiment or --config"),
])
@pytest.mark.fast
def test_config_errors_come_before_tensorflow_is_imported(tmp_path, args, phrase):
    (tmp_path / "typo.py").write_text(TYPO_EXPERIMENT)
    result = _run_without_tensorflow(["train", *args, f"--model_dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    error, imported = result.stderr.strip().splitlines()
    assert error.startswith("nntrain: error: ") and phrase in error
    assert imported == "tensorflow imported: False"
    assert not (tmp_path / "run").exists()


@pytest.mark.fast
def test_base_sections_are_locked_and_model_is_open():
    config = nn_config.base_config()
    for section in ("data", "optimizer", "schedule", "train"):
        with pytest.raises(AttributeError, match="batchsize.*locked"):
            config[section].batchsize = 2
    config.model.hidden_sizes = (8,)  # each builder has its own fields
    assert config.model.hidden_sizes == (8,)


def test_config_py_and_saved_config_json_train_from_outside_the_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("mine.py").write_text(textwrap.dedent("""
        from nntrain.experiments.xor import get_config as xor_config


        def get_config():
            config = xor_config()
            config.train.steps_per_epoch = 5
            config.seed = 7
            return config
    """))
    with pytest.raises(SystemExit) as done:
        cli.run(["nntrain", "train", "--config=mine.py", "--model_dir=first", "--config.train.epochs=1", "--json"])
    assert done.value.code in (0, None)
    saved = json.loads(Path("first/config.json").read_text())
    assert saved["seed"] == 7 and saved["experiment"] == "mine" and saved["train"]["steps_per_epoch"] == 5
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.run(["nntrain", "train", "--config=first/config.json", "--model_dir=again", "--config.train.epochs=2",
                 "--json"])
    assert done.value.code in (0, None)
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["epoch"] == 2
    again = json.loads(Path("again/config.json").read_text())
    assert again == {**saved, "train": {**saved["train"], "epochs": 2}}


@pytest.mark.fast
def test_every_config_field_has_a_description():
    fields = nn_config.describe()
    assert {key for key, _, _ in fields} >= {"train.batch_size", "optimizer.learning_rate", "data.source"}
    assert [key for key, _, text in fields if not text] == []


@pytest.mark.parametrize("command", ["train", "tune", "evaluate"])
@pytest.mark.fast
def test_command_help_shows_its_flags_and_config_keys(command, capsys):
    with pytest.raises(SystemExit):
        cli.run(["nntrain", command, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"nntrain {command}: {cli.COMMANDS[command].summary}")
    for flag in cli.COMMANDS[command].flags:
        assert f"--{flag}=" in text
    if cli.COMMANDS[command].takes_config:
        for key, _default, description in nn_config.describe():
            assert f"  {key}=" in text and description in text
        assert "  train.batch_size=128\n      global batch size" in text
    else:
        assert "train.batch_size" not in text
    assert "--export_dir" not in text  # another command's flag


def test_none_is_a_word_for_string_fields_and_refused_for_numbers():
    """`--config.data.augment=none` (a choice named none) is the string; a number field still refuses None."""
    config = nn_config.resolve("mnist_mlp", [("data.augment", "none"), ("data.data_dir", "None")])
    assert config.data.augment == "none" and config.data.data_dir is None  # data_dir is an optional path
    with pytest.raises(NntrainError, match="None is not allowed here, an integer expected"):
        nn_config.resolve("mnist_mlp", [("train.batch_size", "none")])


def test_a_config_is_checked_once_on_its_way_from_the_cli_to_the_run(tmp_path, monkeypatch):
    """config.validate is the one check (the monitor's direction included); resolve, the api and the trainer all
    meet it, and it runs once."""
    checked = []
    check_values = nn_config._check_values
    monkeypatch.setattr(nn_config, "_VALID", set())  # configs other tests validated in this process
    monkeypatch.setattr(nn_config, "_check_values", lambda config: checked.append(1) or check_values(config))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", "--experiment=xor", f"--model_dir={tmp_path / 'run'}",
                 "--config.train.epochs=1", "--config.train.steps_per_epoch=2"])
    assert exit_info.value.code in (0, None) and (tmp_path / "run" / "model.keras").exists()
    assert len(checked) == 1


@pytest.mark.parametrize("monitor, mode", [("val_custom", "auto"), ("val_loss", "best")])
def test_the_monitors_direction_is_checked_with_the_config(tmp_path, monitor, mode):
    """What needs Keras to validate is checked in config.validate too, before a run writes anything."""
    import nntrain
    from nntrain.errors import NntrainError

    overrides = {"train.monitor": monitor, "train.monitor_mode": mode}
    with pytest.raises(NntrainError, match="train.monitor_mode"):
        nntrain.load_config("xor", overrides)
    config = nntrain.load_config("xor")
    config.train.monitor, config.train.monitor_mode = monitor, mode
    with pytest.raises(NntrainError, match="train.monitor_mode"):
        nntrain.train(config, str(tmp_path / "run"), strategy="cpu")
    assert not (tmp_path / "run").exists()


def test_validating_a_metric_monitor_leaves_tensorflows_context_unstarted():
    """config.validate asks Keras which way val_accuracy goes before a multi-worker strategy exists: that strategy
    configures collective ops, which TensorFlow allows only before its eager context starts."""
    code = ("from tensorflow.python.eager import context\nimport nntrain\n"
            "config = nntrain.load_config('mnist_mlp')\nassert config.train.monitor == 'val_accuracy'\n"
            "print('started:', context.context()._context_handle is not None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "started: False"
