"""Damaged run directories, mismatched resumes and divergence (issue 14): one line, and the run is left as it was.

One xor run is trained once (two checkpoints kept); each case damages its own copy.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_failures, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntrain import cli
from nntrain import config as nn_config
from nntrain.errors import NntrainError
from nntrain.run import bundles, checkpoints

XOR = ["--experiment=xor", "--config.train.steps_per_epoch=2", "--config.optimizer.name=sgd",
       "--config.optimizer.learning_rate=0.5", "--config.train.keep_checkpoints=2"]
INDEX_4, DATA_4 = "checkpoints/step-4/tensors.json", "checkpoints/step-4/tensors.data"


def _train(model_dir: Path, *args: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", *XOR, f"--model_dir={model_dir}", *args])
    assert exit_info.value.code in (0, None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An xor run of 2 epochs of 2 steps: checkpoints step-2/ and step-4/, best.keras, model.keras."""
    run = tmp_path_factory.mktemp("trained") / "run"
    _train(run, "--config.train.epochs=2")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.keras", "state.json", "step-2", "step-4"]
    return run


def _copy(trained: Path, root: Path, name: str, damage: dict[str, bytes | None]) -> str:
    """A copy of the trained run with each file of `damage` replaced by its bytes (None: deleted, a file or a
    directory)."""
    run = root / name
    shutil.copytree(trained, run)
    for path, content in damage.items():
        if content is None:
            shutil.rmtree(run / path) if (run / path).is_dir() else (run / path).unlink()
        else:
            (run / path).write_bytes(content)
    return f"--model_dir={run}"


def _damage_cases(trained: Path, root: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments, a phrase the error line must contain)."""
    config = (trained / "config.json").read_bytes()
    state = json.loads((trained / "checkpoints" / "state.json").read_text())
    model = (trained / "model.keras").read_bytes()
    index, data = (trained / INDEX_4).read_bytes(), (trained / DATA_4).read_bytes()
    resume = ["train", *XOR, "--config.train.epochs=3"]

    def run(name: str, damage: dict[str, bytes | None] | None = None) -> str:
        return _copy(trained, root, name, damage or {})

    def state_of(**fields) -> bytes:
        return json.dumps({**state, **fields}).encode()

    return [
        ("truncated config.json, train", [*resume, run("c1", {"config.json": config[:40]})],
         "config.json is damaged (not JSON"),
        ("empty config.json, evaluate", ["evaluate", run("c2", {"config.json": b""})],
         "config.json is damaged (empty)"),
        ("config.json a list, train", [*resume, run("c3", {"config.json": b"[1, 2]"})],
         "config.json is damaged (a JSON list, not an object)"),
        ("config.json of wrong types, export",
         ["export", run("c4", {"config.json": b'{"train": {"epochs": "two"}}'}), f"--export_dir={root / 'e'}"],
         "config.json"),
        ("truncated state.json, train", [*resume, run("s1", {"checkpoints/state.json": b'{"latest": "step-'})],
         "state.json is damaged (not JSON"),
        ("empty state.json, evaluate latest", ["evaluate", run("s2", {"checkpoints/state.json": b""}),
                                               "--checkpoint=latest"], "state.json is damaged (empty)"),
        ("state.json a list, train", [*resume, run("s3", {"checkpoints/state.json": b"[]"})],
         "a JSON list, not an object"),
        ("state.json latest a number", [*resume, run("s4", {"checkpoints/state.json": state_of(latest=4)})],
         "'latest' is 4"),
        ("state.json step a string", [*resume, run("s5", {"checkpoints/state.json": state_of(step="4")})],
         "'step' is '4'"),
        ("state.json kept of numbers", [*resume, run("s6", {"checkpoints/state.json": state_of(kept=[2, 4])})],
         "'kept' is [2, 4]"),
        ("state.json names a missing checkpoint, train",
         [*resume, run("m1", {"checkpoints/state.json": state_of(latest="step-9", kept=["step-9"])})],
         "step-9, named in state.json, is missing"),
        ("state.json names a missing checkpoint, evaluate",
         ["evaluate", "--checkpoint=latest", run("m2", {"checkpoints/step-4": None})],
         "step-4 is damaged (missing, though state.json names it): use --checkpoint=final or "
         "--checkpoint=best"),
        ("a checkpoint's data file gone", [*resume, run("m3", {DATA_4: None, "checkpoints/step-2": None,
                                                                "checkpoints/state.json": state_of(kept=["step-4"])})],
         "step-4 is unreadable (its data file tensors.data is missing)"),
        ("only checkpoint's index truncated", [*resume, run("k1", {INDEX_4: index[:20],
                                                             "checkpoints/state.json": state_of(kept=["step-4"])})],
         "step-4 is unreadable (its index tensors.json is damaged: JSONDecodeError"),
        ("only checkpoint's data truncated", [*resume, run("k3", {DATA_4: data[:-4],
                                                            "checkpoints/state.json": state_of(kept=["step-4"])})],
         f"step-4 is unreadable (its data file tensors.data holds {len(data) - 4:,} bytes, its index {len(data):,})"),
        ("both checkpoints empty", [*resume, run("k2", {INDEX_4: b"", "checkpoints/step-2/tensors.json": b""})],
         "no readable checkpoint in"),
        ("truncated model.keras, evaluate", ["evaluate", run("f1", {"model.keras": model[:-100]})],
         "model.keras is damaged (not a readable .keras archive"),
        ("truncated model.keras names the fix", ["evaluate", run("f2", {"model.keras": model[:1000]})],
         "use --checkpoint=best"),
        ("truncated model.keras, export",
         ["export", run("f3", {"model.keras": model[:1000]}), f"--export_dir={root / 'e3'}"],
         "model.keras is damaged"),
        ("truncated model.keras, generate", ["generate", run("f4", {"model.keras": model[:1000]}), "--prompt=a"],
         "model.keras is damaged"),
        ("checkpoints gone, evaluate latest",
         ["evaluate", "--checkpoint=latest", run("g1", dict.fromkeys(
             ["checkpoints/state.json", "checkpoints/step-2", "checkpoints/step-4",
              "checkpoints/best.keras"]))], "has no latest model, only final: use --checkpoint=final"),
        ("best gone, evaluate best", ["evaluate", "--checkpoint=best", run("g2", {"checkpoints/best.keras": None})],
         "has no best model, only final and latest: use --checkpoint=final or --checkpoint=latest"),
        ("empty best.keras", ["evaluate", "--checkpoint=best", run("b1", {"checkpoints/best.keras": b""})],
         "best.keras is damaged"),
        ("dataset.json a string, train", [*resume, run("d1", {"dataset.json": b'"xor"'})],
         "dataset.json is damaged (a JSON str, not an object)"),
        ("metrics.jsonl truncated", [*resume, run("j1", {"metrics.jsonl": b'{"epoch": 1, "lo'})],
         "metrics.jsonl is damaged"),
        ("metrics.jsonl without epochs", [*resume, run("j2", {"metrics.jsonl": b'{"loss": 1}\n'})],
         "line 1 has no epoch number"),
        ("another optimizer on resume", ["train", *XOR, "--config.train.epochs=3", "--config.optimizer.name=adam",
                                         run("o1")], "holds no state of this optimizer (adam)"),
        ("EMA turned on at resume", [*resume, "--config.optimizer.use_ema=true", run("e1")],
         "holds a run whose optimizer keeps other state (optimizer.use_ema=False (now True)); resume with the run's "
         "optimizer.use_ema"),
        ("accumulation turned on at resume", [*resume, "--config.optimizer.gradient_accumulation_steps=2", run("a1")],
         "(optimizer.gradient_accumulation_steps=None (now 2))"),
        ("another model on resume", ["train", *XOR, "--config.train.epochs=3", "--config.model.hidden_sizes=(16,)",
                                     run("h1")], "another model (model.hidden_sizes=[8] (now [16]))"),
    ]


@pytest.mark.slow
def test_a_damaged_run_directory_is_one_line_and_left_as_it_was(trained, tmp_path, capfd):
    failures = cli_failures(_damage_cases(trained, tmp_path), tmp_path, capfd)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_falls_back_to_the_last_good_one(trained, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = run / INDEX_4
    newest.write_bytes(newest.read_bytes()[:20])
    with caplog.at_level(logging.INFO, logger="nntrain"):
        _train(run, "--config.train.epochs=3")
    assert "checkpoint step-4 is unreadable (its index tensors.json is damaged: JSONDecodeError" in caplog.text
    assert "resuming from step-2 (step 2), the last good one" in caplog.text
    assert "resuming from the checkpoint in" in caplog.text and "step 2 of 6" in caplog.text
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["step"] == 6 and state["kept"] == ["step-4", "step-6"]  # step 4 trained again
    assert [line["epoch"] for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]


def _export(run: Path, export_dir: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "export", f"--model_dir={run}", f"--export_dir={export_dir}", "--json"])
    assert exit_info.value.code in (0, None)


EXPORTED = ["dataset.json", "model.keras", "saved_model"]


@pytest.mark.slow
def test_export_writes_only_into_what_it_created(trained, tmp_path, monkeypatch, capfd):
    """A user's EXPORT.partial/ is left as it was; --export_dir=. (an empty working directory) is filled, not
    removed; a failed export into an existing empty directory leaves it there, empty, and nothing beside it."""
    from nntrain.exports import serving

    (tmp_path / "export.partial").mkdir()
    (tmp_path / "export.partial" / "notes.txt").write_text("the user's own")
    _export(trained, str(tmp_path / "export"))
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == EXPORTED
    assert (tmp_path / "export.partial" / "notes.txt").read_text() == "the user's own"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.partial"]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    _export(trained, ".")
    assert here.is_dir() and sorted(p.name for p in here.iterdir()) == EXPORTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.partial", "here"]
    (tmp_path / "empty").mkdir()

    def fail(*args):
        raise NntrainError("the SavedModel could not be scored")

    monkeypatch.setattr(serving, "score", fail)
    capfd.readouterr()
    failures = cli_failures([("failed export into an empty dir", ["export", f"--model_dir={trained}",
                                                                   f"--export_dir={tmp_path / 'empty'}"],
                              "could not be scored")], tmp_path, capfd)
    assert not failures, "\n".join(failures)
    assert (tmp_path / "empty").is_dir() and not list((tmp_path / "empty").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "export", "export.partial", "here"]


@pytest.mark.slow
def test_export_scores_the_runs_eval_steps(trained, tmp_path, capfd):
    """Not the whole eval split (text_gpt's 5,440 held-out sequences took 113 s): the batches the run evaluates."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    config["train"].update(eval_steps=1, batch_size=2)
    (run / "config.json").write_text(json.dumps(config))
    _export(run, str(tmp_path / "export"))
    assert json.loads(capfd.readouterr().out)["eval_examples"] == 2  # the split holds 4
    _export(trained, str(tmp_path / "whole"))
    assert json.loads(capfd.readouterr().out)["eval_examples"] == 4


def _npz(path: Path, shape: tuple[int, ...], classes: int = 3) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.uniform(size=(16, *shape)).astype(np.float32), y_train=np.arange(16) % classes,
             x_test=rng.uniform(size=(4, *shape)).astype(np.float32), y_test=np.arange(4) % classes)
    return f"--config.data.source=npz:{path}"


@pytest.mark.slow
def test_resuming_on_other_data_or_diverging_changes_nothing(tmp_path, capfd):
    quadratic = ["train", "--experiment=quadratic", f"--model_dir={tmp_path / 'quadratic'}",
                 "--config.train.steps_per_epoch=2", "--config.train.tensorboard=false"]  # (a diverged run's
    # TensorBoard events are new files: kept, they show the steps before the divergence)
    with pytest.raises(SystemExit):
        cli.run(["nntrain", *quadratic, "--config.train.epochs=1"])
    images = tmp_path / "images"
    mnist = ["train", "--experiment=mnist_mlp", f"--model_dir={images}", "--config.train.batch_size=4"]
    with pytest.raises(SystemExit):
        cli.run(["nntrain", *mnist, "--config.train.epochs=1", _npz(tmp_path / "a.npz", (4, 4, 1))])
    assert (images / "model.keras").is_file()
    capfd.readouterr()
    diverge = [*quadratic, "--config.train.epochs=2", "--config.optimizer.learning_rate=1e30"]
    cases = [
        ("another input shape", [*mnist, "--config.train.epochs=2", _npz(tmp_path / "b.npz", (5, 5, 1))],
         f"model_dir '{images}' holds a run on data of input_shape [4, 4, 1], this data has input_shape [5, 5, 1]"),
        ("another number of classes", [*mnist, "--config.train.epochs=2", _npz(tmp_path / "c.npz", (4, 4, 1), 5)],
         "holds a run on data of num_classes 3, this data has num_classes 5"),
        ("diverging resume", [*diverge, "--config.train.steps_per_execution=1"],
         "loss became NaN/inf at step 4; last finite loss 0."),
        ("diverging resume in blocks of 2 steps", [*diverge, "--config.train.steps_per_execution=2"],
         "loss became NaN/inf within steps 3-4; last finite loss 0."),
    ]
    failures = cli_failures(cases, tmp_path, capfd)
    assert not failures, "\n".join(failures)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False),
                                     st.text(max_size=12), st.sampled_from(["step-2.keras", "best.keras", ""])),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)
states = st.dictionaries(st.sampled_from(["latest", "step", "kept", "rng", "best", "epoch"]), json_values, max_size=6)
contents = st.one_of(states.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40))


@settings(derandomize=True, deadline=None, database=None, max_examples=1000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=contents, config=contents)
def test_fuzzed_run_files_are_read_or_refused_in_one_line(tmp_path, state, config):
    """Whatever state.json and config.json hold: a resume point or one NntrainError line, and no file changes."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "state.json").write_text(state)
    (run / "checkpoints" / "step-2.keras").write_bytes(b"PK\x03\x04 not a whole archive")
    (run / "config.json").write_text(config)
    before = snapshot(run)
    for read in (lambda: checkpoints.resume_point(str(run / "checkpoints")),
                 lambda: nn_config.load_saved(str(run))):
        try:
            read()
        except NntrainError as e:
            assert str(e) and "\n" not in str(e), repr(str(e))
    assert snapshot(run) == before


@pytest.mark.slow
def test_runs_with_older_step_checkpoints_still_resume_exactly(trained, tmp_path):
    """Runs written before step bundles (step-N.keras, RNG states in state.json) and before nntrain's own bundle
    files (TensorFlow's format, SaveV2's variables.index + data) resume as a run of today does."""
    old, tf_format, new = tmp_path / "old", tmp_path / "tf_format", tmp_path / "new"
    for run in (old, tf_format, new):
        shutil.copytree(trained, run)
    for name in ("step-2", "step-4"):  # as nntrain wrote them until December 2026
        bundle, directory = bundles.load(str(new / "checkpoints" / name)), tf_format / "checkpoints" / name
        shutil.rmtree(directory)
        directory.mkdir()
        tf.raw_ops.SaveV2(prefix=str(directory / "variables"), tensor_names=list(bundle),
                          shape_and_slices=[""] * len(bundle), tensors=list(bundle.values()))
    for name in ("step-2", "step-4"):
        shutil.rmtree(old / "checkpoints" / name)
    shutil.copy(old / "model.keras", old / "checkpoints" / "step-4.keras")  # model + optimizer state at step 4
    state = json.loads((old / "checkpoints" / "state.json").read_text())
    (old / "checkpoints" / "state.json").write_text(json.dumps({**state, "latest": "step-4.keras",
                                                                 "kept": ["step-4.keras"], "rng": []}))
    for run in (old, tf_format, new):
        _train(run, "--config.train.epochs=3")
    assert json.loads((old / "checkpoints" / "state.json").read_text())["kept"] == ["step-4.keras", "step-6"]
    assert sorted(p.name for p in (tf_format / "checkpoints" / "step-4").iterdir()) == [
        "variables.data-00000-of-00001", "variables.index"]  # resumed from it (kept), not rewritten
    weights = [keras.saving.load_model(run / "model.keras").get_weights() for run in (old, tf_format, new)]
    for a, b, c in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
