"""Every notebook in notebooks/ runs headless in a Jupyter kernel, small and on real MNIST; none stores outputs."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import nntrain
from nntrain.distribute import diagnostics

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
MNIST = {"DATA_SOURCE": f"idx:{MNIST_DIR}", "TRAIN_SPLIT": "test[:8000]", "EVAL_SPLIT": "test[8000:]"}
NOTEBOOK_SECONDS = 120  # the limit for one notebook on this machine


def _notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def execute_notebook(name: str, parameters: dict, workdir: Path, kernel: str = "python3",
                     env: dict | None = None) -> tuple[nbformat.NotebookNode, float]:
    """Runs a notebook in a fresh kernel, with `parameters` injected after its `parameters` cell (as papermill does).

    By default the kernel runs this interpreter, as in an activated virtual environment.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    if env is None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    client = NotebookClient(notebook, timeout=NOTEBOOK_SECONDS, kernel_name=kernel,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.monotonic()
    client.execute(env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return notebook, time.monotonic() - start


def text_of(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed (streams and text results)."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def test_notebooks_are_stored_without_outputs_and_start_with_parameters():
    paths = _notebook_paths()
    assert {p.name for p in paths} >= {"quickstart.ipynb", "tpu.ipynb", "sweep.ipynb"}
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell is not `parameters`"
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs: clear them"


def test_readme_links_every_notebook_to_colab():
    readme = (REPO / "README.md").read_text()
    for path in _notebook_paths():
        assert re.search(rf"https://colab\.research\.google\.com/github/[^)\s]+/blob/main/notebooks/{path.name}",
                         readme), f"README has no Open in Colab link for {path.name}"


@pytest.mark.slow
def test_quickstart_trains_plots_predicts_and_exports(tmp_path):
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    notebook, seconds = execute_notebook("quickstart.ipynb", {
        "EPOCHS": 2, "MODEL_DIR": str(model_dir), "EXPORT_DIR": str(export_dir), **MNIST}, tmp_path)
    assert seconds < NOTEBOOK_SECONDS
    text = text_of(notebook)
    assert "local machine, CPU runtime" in text
    history = nntrain.history(str(model_dir))
    assert len(history) == 2 and history[-1]["val_accuracy"] >= 0.9, history
    assert f"held-out images: {history[-1]['val_accuracy']:.2%}" in text  # evaluate agrees with training
    assert (model_dir / "curves.png").stat().st_size > 10_000
    assert (model_dir / "predictions.png").stat().st_size > 10_000
    assert _images(notebook) == 2
    assert (export_dir / "saved_model" / "saved_model.pb").is_file() and (export_dir / "model.keras").is_file()
    assert "the reloaded SavedModel predicts the same classes for all 24 images" in text


def test_tpu_notebook_installs_the_tensorflow_tpu_pair_that_doctor_recommends():
    install = diagnostics.tpu_install_line("2.21.0").removeprefix("pip install ")
    sources = [cell.source for cell in nbformat.read(NOTEBOOKS / "tpu.ipynb", as_version=4).cells]
    assert any(f"%pip install --quiet {install}" in source for source in sources)


@pytest.mark.slow
def test_tpu_notebook_without_a_tpu_says_what_to_do_and_trains_on_cpu(tmp_path):
    model_dir = tmp_path / "run"
    notebook, seconds = execute_notebook("tpu.ipynb", {
        "EPOCHS": 2, "BATCH_SIZE": 256, "MODEL_DIR": str(model_dir), **MNIST}, tmp_path)
    assert seconds < NOTEBOOK_SECONDS
    text = text_of(notebook)
    assert "] tpu kernels: this TensorFlow has no TPU kernels" in text  # nntrain doctor ran
    assert "[pass] xla compile:" in text and "ready for the accelerator" in text  # nntrain preflight ran
    assert "No TPU is attached to this runtime. To train on one:" in text
    assert "Meanwhile this notebook trains the same experiment on the CPU." in text
    history = nntrain.history(str(model_dir))
    assert len(history) == 2 and history[-1]["val_accuracy"] >= 0.85, history
    assert f"trained on the CPU: accuracy {history[-1]['val_accuracy']:.2%} on 2000 held-out images" in text


@pytest.mark.slow
def test_sweep_searches_ranks_plots_and_retrains_the_best(tmp_path):
    model_dir = tmp_path / "sweep"
    notebook, seconds = execute_notebook("sweep.ipynb", {
        "MAX_TRIALS": 3, "EPOCHS": 1, "STEPS_PER_EPOCH": 20, "RETRAIN_EPOCHS": 2, "MODEL_DIR": str(model_dir),
        **MNIST}, tmp_path)
    assert seconds < NOTEBOOK_SECONDS
    summary = json.loads((model_dir / "results.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3
    assert any("text/html" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert (model_dir / "score_vs_lr_and_batch_size.png").stat().st_size > 10_000 and _images(notebook) == 1
    logs = model_dir / "logs"
    assert list(logs.glob("events.out.tfevents.*")), "no HParams config at the root of the logs"
    assert len([p for p in logs.iterdir() if p.is_dir()]) == 3
    best = next(t for t in summary["trials"] if t["trial"] == summary["best_trial"])
    retrained = json.loads((model_dir / "best" / "config.json").read_text())
    assert retrained["train"]["batch_size"] == best["settings"]["train.batch_size"]
    assert retrained["optimizer"]["learning_rate"] == pytest.approx(best["settings"]["optimizer.learning_rate"])
    history = nntrain.history(str(model_dir / "best"))
    assert len(history) == 2 and history[-1]["val_accuracy"] >= 0.8, history
    accuracy = history[-1]["val_accuracy"]
    assert f"retrained for 2 epochs: accuracy {accuracy:.2%} on 2000 held-out images" in text_of(notebook)


def test_every_plotted_axis_has_its_labels():
    """Each notebook cell that draws curves or points names both axes of every plot it labels (x and y)."""
    for path in _notebook_paths():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and re.search(r"\.(plot|scatter)\(", cell.source):
                xlabels, ylabels = (len(re.findall(rf"set_{axis}label\(", cell.source)) for axis in "xy")
                assert xlabels == ylabels >= 1, f"{path.name}: {xlabels} x labels, {ylabels} y labels in\n{cell.source}"
