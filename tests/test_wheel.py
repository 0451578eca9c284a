"""The built wheel, installed (not editable) in a fresh environment, works from outside the repository: the CLI
trains a shipped experiment and the quickstart notebook runs against it; the notebooks' install cell stops with
a clear message when nntrain is missing and its source is unset or does not install (tests/wheel_env.py builds
the environment; conftest.py's `installed` fixture is shared with tests/test_docs.py).
"""

from __future__ import annotations

import configparser
import json
import zipfile
from pathlib import Path

import pytest
from nbclient.exceptions import CellExecutionError
from test_notebooks import MNIST, execute_notebook, text_of
from wheel_env import REPO, clean_env, fresh_venv, run


def test_the_wheel_ships_the_experiments_as_a_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nntrain/experiments/__init__.py", "nntrain/experiments/xor.py", "nntrain/run/trainer.py"} <= names
    assert not any(name.startswith("experiments/") for name in names)


def test_the_license_setup_cfg_names_is_in_the_repository_and_the_wheel(wheel):
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    shipped = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith("/LICENSE")]
    assert len(shipped) == 1 and zipfile.ZipFile(wheel).read(shipped[0]).decode() == text


def test_the_editable_install_finds_this_checkouts_experiments():
    """`--experiment=NAME` in a checkout (editable install) runs the file in its experiments/, not another copy's."""
    import nntrain.experiments

    from nntrain import config as nn_config

    assert nn_config.EXPERIMENTS_DIR == REPO / "experiments"
    assert Path(nntrain.experiments.__file__).parent == REPO / "experiments"
    assert (nn_config.experiment_module("xor")[1]).parent == REPO / "experiments"


def test_the_installed_wheel_is_imported_and_ships_the_experiments(installed, tmp_path):
    code = "import nntrain, nntrain.config as c; print(nntrain.__file__); print(','.join(c.experiment_names()))"
    where, names = run([installed / "bin" / "python", "-c", code], cwd=tmp_path, timeout=60,
                        env=clean_env(installed)).stdout.splitlines()
    assert Path(where).is_relative_to(installed) and "dist-info" not in where
    assert {"xor", "mnist_mlp", "quadratic"} <= set(names.split(","))


@pytest.mark.slow
def test_the_installed_cli_trains_a_shipped_experiment_outside_the_repo(installed, tmp_path):
    result = run([installed / "bin" / "nntrain", "train", "--experiment=xor", "--model_dir=run", "--json",
                   "--config.train.epochs=2", "--config.train.steps_per_epoch=50"], cwd=tmp_path, timeout=300,
                  env=clean_env(installed))
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 2 and metrics["val_accuracy"] == 1.0
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_quickstart_runs_against_the_installed_wheel(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(installed / "share" / "jupyter"))
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    notebook, _ = execute_notebook("quickstart.ipynb", {
        "EPOCHS": 1, "STEPS_PER_EPOCH": 20, "MODEL_DIR": str(model_dir), "EXPORT_DIR": str(export_dir), **MNIST},
        tmp_path, kernel=installed.name, env=clean_env(installed))
    assert "the reloaded SavedModel predicts the same classes for all 24 images" in text_of(notebook)
    assert json.loads((model_dir / "config.json").read_text())["train"]["steps_per_epoch"] == 20
    assert (export_dir / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("source, message", [
    ("", "nntrain is not installed in this kernel: set NNTRAIN_SOURCE in the Parameters cell"),
    ("/no/such/nntrain.whl", "could not install nntrain from NNTRAIN_SOURCE='/no/such/nntrain.whl'"),
])
def test_install_cell_stops_with_a_clear_message(source, message, tmp_path, monkeypatch):
    venv = fresh_venv(tmp_path / "bare")  # nntrain not installed
    monkeypatch.setenv("JUPYTER_PATH", str(venv / "share" / "jupyter"))
    with pytest.raises(CellExecutionError, match="RuntimeError") as stopped:
        execute_notebook("quickstart.ipynb", {"NNTRAIN_SOURCE": source, "MODEL_DIR": str(tmp_path / "run")},
                         tmp_path, kernel=venv.name, env=clean_env(venv))
    assert message in str(stopped.value)
    assert not (tmp_path / "run").exists()  # no later cell ran
