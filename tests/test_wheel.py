"""The built wheel, installed (not editable) in a fresh environment, works from outside the repository: the CLI
trains a shipped experiment and the quickstart notebook runs against it; the notebooks' install cell stops with
a clear message when nntrain is missing and its source is unset or does not install.

The fresh environment is a venv without pip whose site-packages holds .pth lines naming this interpreter's
site-packages: the dependencies come from there (no download), while the repository's editable install is not
seen (a .pth line adds a directory without running the .pth files in it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from nbclient.exceptions import CellExecutionError
from test_notebooks import MNIST, execute_notebook, text_of

REPO = Path(__file__).resolve().parent.parent
PACKAGING_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result


def _clean_env(venv: Path) -> dict:
    """The environment of a user who activated `venv`: none of this checkout on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}


def _fresh_venv(directory: Path) -> Path:
    """A venv whose dependencies are this interpreter's site-packages, and a Jupyter kernel that runs it."""
    _run([sys.executable, "-m", "venv", "--without-pip", directory], timeout=120)
    python = directory / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60).stdout
    # This interpreter's site-packages, and those its .pth files add (a worktree venv shares another's packages).
    sites = dict.fromkeys([sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("site-packages"))])
    Path(site.strip(), "dependencies.pth").write_text("".join(f"{path}\n" for path in sites))
    kernel = directory / "share" / "jupyter" / "kernels" / directory.name
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": directory.name, "language": "python"}))
    return directory


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """nntrain's wheel, built from a copy of the package files (the checkout gets no build/ or egg-info)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for package in ("nntrain", "experiments"):  # experiments/ installs as nntrain.experiments (setup.cfg package_dir)
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGING_FILES:
        shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", root / "dist",
          source], timeout=300)
    (built,) = (root / "dist").glob("nntrain-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable)."""
    venv = _fresh_venv(tmp_path_factory.mktemp("envs") / "installed")
    _run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", "--quiet", wheel],
         timeout=300, env=_clean_env(venv))
    return venv


def test_the_wheel_ships_the_experiments_as_a_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nntrain/experiments/__init__.py", "nntrain/experiments/xor.py", "nntrain/run/trainer.py"} <= names
    assert not any(name.startswith("experiments/") for name in names)


def test_the_editable_install_finds_this_checkouts_experiments():
    """`--experiment=NAME` in a checkout (editable install) runs the file in its experiments/, not another copy's."""
    import nntrain.experiments

    from nntrain import config as nn_config

    assert nn_config.EXPERIMENTS_DIR == REPO / "experiments"
    assert Path(nntrain.experiments.__file__).parent == REPO / "experiments"
    assert (nn_config.experiment_module("xor")[1]).parent == REPO / "experiments"


def test_the_installed_wheel_is_imported_and_ships_the_experiments(installed, tmp_path):
    code = "import nntrain, nntrain.config as c; print(nntrain.__file__); print(','.join(c.experiment_names()))"
    where, names = _run([installed / "bin" / "python", "-c", code], cwd=tmp_path, timeout=60,
                        env=_clean_env(installed)).stdout.splitlines()
    assert Path(where).is_relative_to(installed) and "dist-info" not in where
    assert {"xor", "mnist_mlp", "quadratic"} <= set(names.split(","))


@pytest.mark.slow
def test_the_installed_cli_trains_a_shipped_experiment_outside_the_repo(installed, tmp_path):
    result = _run([installed / "bin" / "nntrain", "train", "--experiment=xor", "--model_dir=run", "--json",
                   "--config.train.epochs=2", "--config.train.steps_per_epoch=50"], cwd=tmp_path, timeout=300,
                  env=_clean_env(installed))
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 2 and metrics["val_accuracy"] == 1.0
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_quickstart_runs_against_the_installed_wheel(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(installed / "share" / "jupyter"))
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    notebook, _ = execute_notebook("quickstart.ipynb", {
        "EPOCHS": 1, "STEPS_PER_EPOCH": 20, "MODEL_DIR": str(model_dir), "EXPORT_DIR": str(export_dir), **MNIST},
        tmp_path, kernel=installed.name, env=_clean_env(installed))
    assert "the reloaded SavedModel predicts the same classes for all 24 images" in text_of(notebook)
    assert json.loads((model_dir / "config.json").read_text())["train"]["steps_per_epoch"] == 20
    assert (export_dir / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("source, message", [
    ("", "nntrain is not installed in this kernel: set NNTRAIN_SOURCE in the Parameters cell"),
    ("/no/such/nntrain.whl", "could not install nntrain from NNTRAIN_SOURCE='/no/such/nntrain.whl'"),
])
def test_install_cell_stops_with_a_clear_message(source, message, tmp_path, monkeypatch):
    venv = _fresh_venv(tmp_path / "bare")  # nntrain not installed
    monkeypatch.setenv("JUPYTER_PATH", str(venv / "share" / "jupyter"))
    with pytest.raises(CellExecutionError, match="RuntimeError") as stopped:
        execute_notebook("quickstart.ipynb", {"NNTRAIN_SOURCE": source, "MODEL_DIR": str(tmp_path / "run")},
                         tmp_path, kernel=venv.name, env=_clean_env(venv))
    assert message in str(stopped.value)
    assert not (tmp_path / "run").exists()  # no later cell ran
