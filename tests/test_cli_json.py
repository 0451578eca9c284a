"""`--json`: every command prints exactly one JSON document on stdout; progress and logs go to stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from corpora import TINY_GPT

from nntrain import cli

TINY = ["--experiment=xor", "--strategy=cpu", "--config.train.epochs=1", "--config.train.steps_per_epoch=5"]


def _json_of(args: list[str], capfd) -> tuple[dict, str]:
    """Runs `nntrain ARGS --json` in this process; returns the parsed stdout and the stderr."""
    with pytest.raises(SystemExit) as done:
        cli.run(["nntrain", *args, "--json"])
    out, err = capfd.readouterr()
    assert done.value.code in (0, 1, None), err[-2000:]  # doctor and preflight exit 1 when a check fails
    return json.loads(out), err


@pytest.mark.slow
def test_every_command_prints_one_json_document(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    seen = {}
    seen["train"], err = _json_of(["train", *TINY, "--model_dir=run"], capfd)
    assert seen["train"]["epoch"] == 1 and "5/5 - " in err  # Keras's progress went to stderr
    seen["evaluate"], _ = _json_of(["evaluate", "--model_dir=run"], capfd)
    (tmp_path / "rows.csv").write_text("a,b\n0,1\n1,1\n")
    seen["predict"], _ = _json_of(["predict", "--model_dir=run", "--input=rows.csv"], capfd)
    seen["config"], _ = _json_of(["config", *TINY[:1]], capfd)
    seen["export"], _ = _json_of(["export", "--model_dir=run", "--export_dir=exported"], capfd)
    seen["doctor"], _ = _json_of(["doctor", "--model_dir=run"], capfd)
    seen["bench"], _ = _json_of(["bench", *TINY, "--steps=8"], capfd)
    seen["preflight"], _ = _json_of(["preflight", *TINY[:1], "--target=gpu"], capfd)
    seen["find-batch-size"], _ = _json_of(["find-batch-size", *TINY, "--max_batch_size=32", "--batch_steps=2"],
                                          capfd)
    seen["find-lr"], _ = _json_of(["find-lr", *TINY, "--model_dir=lr", "--lr_steps=5"], capfd)
    seen["tune"], _ = _json_of(["tune", *TINY, "--model_dir=sweep", "--max_trials=1"], capfd)
    seen["data-service"], _ = _json_of(["data-service", "--port=0", "--workers=1", "--max_seconds=0.5"], capfd)
    seen["convert"], _ = _json_of(["convert", "--source=generated:xor", "--split=train", "--output=records"], capfd)
    small_gpt = [f"--config.{key}={value}" for key, value in TINY_GPT.items()]
    _json_of(["train", "--experiment=text_gpt", "--strategy=cpu", "--model_dir=gpt", *small_gpt], capfd)
    seen["generate"], _ = _json_of(["generate", "--model_dir=gpt", "--prompt=def ", "--max_new_tokens=4"], capfd)
    # launch starts worker processes: run it as one, bounded by a timeout.
    train = [arg for arg in TINY if arg != "--strategy=cpu"]  # the workers run multi_worker
    launched = subprocess.run([sys.executable, "-m", "nntrain.cli", "launch", "--workers=2", "--json", "--", "train",
                               *train, "--model_dir=multi"], capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    seen["launch"] = json.loads(launched.stdout)
    assert "[worker 0]" in launched.stderr
    assert set(seen) == set(cli.COMMANDS)
    assert seen["evaluate"]["accuracy"] >= 0 and seen["launch"] == {"workers": 2, "exit_code": 0}
    assert {"checks"} <= set(seen["doctor"]) and "trials" in seen["tune"]
    assert [row["input"] for row in seen["predict"]["predictions"]] == ["rows.csv:2", "rows.csv:3"]
    assert seen["config"]["experiment"] == "xor"
    assert seen["convert"]["splits"]["train"]["examples"] == 4 and seen["generate"]["prompt"] == "def "


def test_an_experiment_file_that_prints_keeps_train_json_one_document(tmp_path, capfd):
    (tmp_path / "chatty.py").write_text("from nntrain.experiments.xor import get_config\nprint('loading chatty')\n")
    result, err = _json_of(["train", f"--config={tmp_path / 'chatty.py'}", *TINY[1:], f"--model_dir={tmp_path / 'r'}"],
                           capfd)
    assert result["epoch"] == 1 and "loading chatty" in err


def test_an_error_with_json_is_a_json_document_too(tmp_path, capfd):
    with pytest.raises(SystemExit) as done:
        cli.run(["nntrain", "evaluate", f"--model_dir={tmp_path}", "--json"])
    out, err = capfd.readouterr()
    assert done.value.code == 2
    assert json.loads(out) == {"error": err.strip().removeprefix("nntrain: error: "), "exit_code": 2}


@pytest.mark.slow
def test_logs_follow_absl_flags_and_say_where_tensorboard_logs_are(tmp_path):
    """--log_dir writes nntrain's log lines to absl's log file; --alsologtostderr shows them on stderr too."""
    quiet_dir, loud_dir = tmp_path / "quiet", tmp_path / "loud"
    quiet_dir.mkdir()
    loud_dir.mkdir()
    quiet = subprocess.run([sys.executable, "-m", "nntrain.cli", "data-service", "--port=0", "--workers=1",
                            "--max_seconds=0.1", "--json", f"--log_dir={quiet_dir}"],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    (log_file,) = [p for p in quiet_dir.iterdir() if p.is_file() and ".INFO." in p.name]
    assert "tf.data service: dispatcher at" in log_file.read_text()
    assert "tf.data service" not in quiet.stderr  # absl sends INFO to the file only
    model_dir = tmp_path / "run"
    loud = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", *TINY, "--config.train.tensorboard=true",
                           f"--model_dir={model_dir}", "--json", f"--log_dir={loud_dir}", "--alsologtostderr"],
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert f"TensorBoard logs: {model_dir / 'logs'}" in loud.stderr
    (log_file,) = [p for p in loud_dir.iterdir() if p.is_file() and ".INFO." in p.name]
    assert f"TensorBoard logs: {model_dir / 'logs'}" in log_file.read_text()
    assert json.loads(loud.stdout)["epoch"] == 1
