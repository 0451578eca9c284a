"""Bad input: exit code != 0, one clear line, no traceback, and earlier outputs left as they were."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_failures, closed_port
from PIL import Image

from nntrain import config as nn_config
from nntrain import quiet

XOR = ["--experiment=xor"]


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """A model_dir that already holds outputs of an earlier run."""
    model_dir = tmp_path / "earlier"
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n')
    (model_dir / "checkpoints" / "latest.keras").write_bytes(b"weights of an earlier run")
    return model_dir


@pytest.fixture
def corrupt_idx(tmp_path: Path) -> Path:
    directory = tmp_path / "corrupt_idx"
    directory.mkdir()
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x0a" + b"truncated")
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x0a" + bytes(10))
    return directory


def _cases(tmp: Path, earlier: Path, corrupt: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments, a phrase the error line must contain)."""
    md = f"--model_dir={earlier}"
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    latin1_flags = tmp / "flags.txt"
    latin1_flags.write_bytes(b"--experiment=xor\n--model_dir=r\xe9sultats\n")
    trained_elsewhere = tmp / "not_trained"
    trained_elsewhere.mkdir(exist_ok=True)
    return [
        ("unknown command", ["fly"], "unknown command 'fly'"),
        ("no command", [], "no command given"),
        ("unknown experiment", ["train", "--experiment=mnist_mpl", md], "did you mean 'mnist_mlp'"),
        ("missing experiment file", ["train", "--experiment=nowhere/exp.py", md], "does not exist"),
        ("unknown config key", ["train", *XOR, md, "--config.train.bach_size=8"], "did you mean 'train.batch_size'"),
        ("wrong type", ["train", *XOR, md, "--config.train.batch_size=many"], "an integer expected"),
        ("negative batch size", ["train", *XOR, md, "--config.train.batch_size=-4"], "train.batch_size=-4"),
        ("zero epochs", ["train", *XOR, md, "--config.train.epochs=0"], "train.epochs=0"),
        ("negative seed", ["train", *XOR, md, "--config.seed=-1"], "seed=-1 is not allowed: it must be in [0, 2"),
        ("negative learning rate", ["train", *XOR, md, "--config.optimizer.learning_rate=-0.1"],
         "optimizer.learning_rate=-0.1"),
        ("unknown optimizer", ["train", *XOR, md, "--config.optimizer.name=adamax"], "use one of sgd"),
        ("override without value", ["train", *XOR, md, "--config.train.epochs"], "--config.KEY=VALUE"),
        ("unknown flag", ["train", *XOR, md, "--epochs=3"], "unknown flag --epochs"),
        ("flag file not in UTF-8", ["train", f"--flagfile={latin1_flags}"], "flags.txt: not UTF-8 text"),
        ("infinite temperature", ["generate", md, "--prompt=a", "--temperature=inf"],
         "--temperature=inf: it must be a finite number > 0"),
        ("temperature not a number", ["generate", md, "--prompt=a", "--temperature=nan"],
         "--temperature=nan: it must be a finite number > 0"),
        ("negative sampling seed", ["generate", md, "--prompt=a", "--seed=-1"],
         "--seed=-1: it must be in [0, 2147483647]"),
        ("prompt not UTF-8", ["generate", md, "--prompt=\udcff\udcfeab"],  # argv's bytes ff fe 61 62 in Python
         "--prompt is not UTF-8 text (byte 0xff at position 0)"),
        ("stray argument", ["train", *XOR, md, "3"], "unexpected argument '3' after `train`"),
        ("data service for -1 s", ["data-service", "--port=0", "--max_seconds=-1"], "--max_seconds=-1.0: use 0"),
        ("loss and head disagree", ["train", *XOR, md, "--config.train.loss=mse"], "needs head 'regression'"),
        ("label smoothing out of range", ["train", *XOR, md, "--config.train.label_smoothing=1.5"],
         "label_smoothing=1.5"),
        ("unknown model", ["train", *XOR, md, "--config.model.name=lstm"], "lstm"),
        ("unknown strategy", ["train", *XOR, md, "--strategy=gpu_cluster"], "--strategy='gpu_cluster'"),
        ("tpu without a name", ["train", *XOR, md, "--strategy=tpu"], "--tpu=local"),
        ("tpu asked for where there is none", ["train", *XOR, md, "--strategy=tpu", "--tpu=local"], "TPU"),
        ("multi_worker without TF_CONFIG", ["train", *XOR, md, "--strategy=multi_worker"], "TF_CONFIG"),
        ("missing data path", ["train", "--experiment=mnist_mlp", md, "--config.data.source=idx:/no/such/dir"],
         "/no/such/dir"),
        ("corrupt IDX file", ["train", "--experiment=mnist_mlp", md, f"--config.data.source=idx:{corrupt}",
                              "--config.data.train_split=test", "--config.data.eval_split=test"],
         "t10k-images-idx3-ubyte.gz"),
        ("unknown data source", ["train", *XOR, md, "--config.data.source=s3:bucket"], "s3:bucket"),
        ("model_dir under a file", ["train", *XOR, f"--model_dir={a_file}/run"], "is a file"),
        ("missing model_dir", ["train", *XOR], "--model_dir is required"),
        ("evaluate an untrained dir", ["evaluate", f"--model_dir={trained_elsewhere}"], "holds no nntrain run"),
        ("export into a non-empty dir", ["export", md, f"--export_dir={earlier}"], "not empty"),
        ("unknown checkpoint", ["evaluate", md, "--checkpoint=newest"], "newest"),
        ("unreachable gs:// bucket", ["train", *XOR, "--model_dir=gs://nntrain-no-such-bucket/run"],
         "model_dir 'gs://nntrain-no-such-bucket/run' cannot be reached (All 0 retry attempts failed"),
        ("missing --log_dir", ["train", *XOR, md, f"--log_dir={tmp}/no/logs"],
         f"--log_dir={tmp}/no/logs is not a directory nntrain can write its log file to"),
        ("ram:// without a path", ["train", *XOR, "--model_dir=ram://"], "model_dir 'ram://' names no directory"),
        ("gs:// without a bucket", ["export", md, "--export_dir=gs://"], "export_dir 'gs://' names no directory"),
        ("ram: URL with one slash", ["train", *XOR, "--model_dir=ram:/x"], "write ram://x (or ./ram:/x"),
        ("gs: URL with one slash", ["convert", "--source=generated:xor", "--split=train", "--output=gs:/b/x"],
         "output 'gs:/b/x' has one slash after 'gs:': write gs://b/x"),
    ]


@pytest.mark.fast
def test_bad_inputs_fail_cleanly(tmp_path, earlier_run, corrupt_idx, capfd, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never reach a real metadata server
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # nor Cloud Storage: its requests fail at once (see conftest)
        monkeypatch.setenv(proxy, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would create ./gs: here, a changed file
    cases = _cases(tmp_path, earlier_run, corrupt_idx)
    assert len(cases) >= 15
    failures = cli_failures(cases, tmp_path, capfd)
    assert not failures, "\n".join(failures)


def _bad_data_cases(tmp: Path, model_dir: Path) -> list[tuple[str, list[str], str]]:
    """Bad data files, each with (name, arguments, the file or key the error line must name)."""
    for folder in ("empty/train/cat", "empty/train/dog", "corrupt/train/cat", "corrupt/test/cat"):
        (tmp / folder).mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp / "empty/train/cat/0.png")
    for split in ("train", "test"):
        Image.new("L", (4, 4)).save(tmp / f"corrupt/{split}/cat/0.png")
    (tmp / "corrupt/train/cat/1.png").write_bytes(b"these bytes are no PNG")
    for pet in ("cat", "dog"):
        (tmp / "pets/train" / pet).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp / "pets/train" / pet / "0.png")
    (tmp / "text.csv").write_text("a,b,label\n1,2,0\n3,three,1\n")
    (tmp / "digits.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (tmp / "story.txt").write_text("once upon a time " * 20)
    (tmp / "blank_label.csv").write_text("a,b,label\n1,2,0\n3,4,\n5,6,1\n")
    (tmp / "label_twice.csv").write_text("a,label,label\n1,2,0\n3,4,1\n")
    (tmp / "labels_only.csv").write_text("label\n0\n1\n")
    (tmp / "header_only.csv").write_text("a,b,label\n")
    (tmp / "long_cell.csv").write_text(f"a,b,label\n1,{'9' * 200_000},0\n3,4,1\n")
    np.savez(tmp / "no_features.npz", x_train=np.zeros((8, 0), np.float32), y_train=np.zeros(8, np.int64),
             x_test=np.zeros((4, 0), np.float32), y_test=np.zeros(4, np.int64))
    with tf.io.TFRecordWriter(str(tmp / "pixels.tfrecord")) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * 784)),
            "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString())
    (tmp / "linked").mkdir()
    (tmp / "linked/story.txt").write_text("once upon a time " * 20)
    (tmp / "linked/gone.txt").symlink_to(tmp / "no_such_file.txt")
    (tmp / "unnamed_records").mkdir()
    shutil.copy(tmp / "pixels.tfrecord", tmp / "unnamed_records" / "part-0.tfrecord")
    run = ["train", "--experiment=mnist_mlp", f"--model_dir={model_dir}"]
    convert = ["convert", "--split=train", f"--output={tmp}/records"]
    return [
        ("empty class folder", [*run, f"--config.data.source=images:{tmp}/empty"], f"{tmp}/empty/train/dog"),
        ("corrupt image", [*run, f"--config.data.source=images:{tmp}/corrupt"], f"{tmp}/corrupt/train/cat/1.png"),
        ("csv text cell", [*run, f"--config.data.source=csv:{tmp}/text.csv"], "text.csv, row 3, column 'b'"),
        ("csv blank label cell (labels would turn into strings)",
         [*run, f"--config.data.source=csv:{tmp}/blank_label.csv"],
         "blank_label.csv, row 3: the label cell (column 'label') is empty: fill it in or remove the row"),
        ("csv column named twice (the label fed in as a feature)",
         [*run, f"--config.data.source=csv:{tmp}/label_twice.csv"], "names column 'label' 2 times in its header"),
        ("csv without feature columns", [*run, f"--config.data.source=csv:{tmp}/labels_only.csv"],
         "has only the label column 'label': it needs at least one feature column"),
        ("csv header only", [*run, f"--config.data.source=csv:{tmp}/header_only.csv"],
         "header_only.csv has a header row but no rows of examples"),
        ("csv 200,000-character cell", [*run, f"--config.data.source=csv:{tmp}/long_cell.csv"],
         "long_cell.csv, line 2: field larger than field limit (131072)"),
        ("arrays of no features", [*run, f"--config.data.source=npz:{tmp}/no_features.npz"],
         "examples of shape (0,) hold no features"),
        ("tfrecord pattern without {split} (eval would read the train files)",
         [*run, f"--config.data.source=tfrecord:{tmp}/pixels.tfrecord", "--config.data.feature_key=pixels"],
         "has no {split} in its file pattern (and no metadata.json), so it holds one split, 'train', not 'test'"),
        ("tfrecord directory without metadata.json", [*run, f"--config.data.source=tfrecord:{tmp}/unnamed_records"],
         "unnamed_records/train-*.tfrecord (split 'train' of data.source=tfrecord:"),
        ("text: glob with a broken symbolic link",
         ["train", "--experiment=text_gpt", f"--model_dir={model_dir}", f"--config.data.source=text:{tmp}/linked/*"],
         f"{tmp}/linked/gone.txt cannot be read ("),
        ("text: corpus shorter than one sequence",
         ["train", "--experiment=text_gpt", f"--model_dir={model_dir}", f"--config.data.source=text:{tmp}/story.txt",
          "--config.data.sequence_length=512"],
         "holds 341 tokens (its bytes and one end-of-file token per file), fewer than one sequence needs "
         "(data.sequence_length=512, plus 1"),
        ("feature key not in the records", [*run, f"--config.data.source=tfrecord:{tmp}/pixels.tfrecord",
                                            "--config.data.eval_split=train"], "does not hold feature 'x'"),
        ("convert a corrupt image", [*convert, f"--source=images:{tmp}/corrupt"], f"{tmp}/corrupt/train/cat/1.png"),
        ("convert a bad split name", [*convert, f"--source=csv:{tmp}/text.csv", "--split=a b"], "--split=a b"),
        ("convert without shards", [*convert, f"--source=csv:{tmp}/text.csv", "--shards=0"], "--shards=0"),
        ("convert a split twice", [*convert, f"--source=csv:{tmp}/digits.csv", "--split=train"],
         "--split names 'train' more than once"),
        ("convert one name, two specs", ["convert", f"--source=csv:{tmp}/digits.csv", "--split=a=train[:1]",
                                         "--split=a=train[1:]", f"--output={tmp}/records"], "names 'a' more than once"),
        ("convert into a file", ["convert", f"--source=csv:{tmp}/digits.csv", "--split=train",
                                 f"--output={tmp}/digits.csv"], f"output '{tmp}/digits.csv' cannot be created"),
        ("convert under a file", ["convert", f"--source=csv:{tmp}/digits.csv", "--split=train",
                                  f"--output={tmp}/digits.csv/records"], "is a file; choose another path"),
        ("convert into more shards than examples", ["convert", f"--source=csv:{tmp}/digits.csv", "--split=all=train",
                                                    "--split=head=train[:1]", "--shards=2", f"--output={tmp}/records"],
         "--shards=2 is more than the 1 examples of split 'head', which would leave shards empty: use --shards=1"),
        ("convert a text source (its records would not train)",
         [*convert, f"--source=text:{tmp}/story.txt", "--experiment=text_gpt", "--config.data.sequence_length=8"],
         "gives a sequence of class ids per example (e.g. a text's next tokens), but convert's records hold one"),
        ("convert into the source's folder", ["convert", f"--source=images:{tmp}/pets", "--split=train",
                                              f"--output={tmp}/pets/train/records"],
         f"--output={tmp}/pets/train/records lies inside the source's directory {tmp}/pets"),
        ("convert into a folder of other files", ["convert", f"--source=csv:{tmp}/digits.csv", "--split=train",
                                                  f"--output={tmp}/empty"], f"--output={tmp}/empty is not empty"),
    ]


@pytest.mark.fast
def test_bad_data_fails_cleanly(tmp_path, capfd):
    failures = cli_failures(_bad_data_cases(tmp_path, tmp_path / "run"), tmp_path, capfd)
    assert not failures, "\n".join(failures)


def test_an_interrupted_convert_removes_its_output_and_runs_again(tmp_path, capfd, monkeypatch):
    """Ctrl-C while shards are written: nothing of --output is left (an output dir that was there stays, empty) and
    the same command then converts; a convert killed outright leaves its list of files, which the next one clears."""
    from nntrain import cli
    from nntrain.data import convert

    (tmp_path / "digits.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(8)))
    (tmp_path / "empty_dir").mkdir()
    write = convert._write

    def interrupted(dataset, paths, spec):
        write(dataset, paths, spec)
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_write", interrupted)
    args = [f"--source=csv:{tmp_path / 'digits.csv'}", "--split=train", "--split=test=train[:2]", "--shards=2"]
    cases = [(f"interrupted into {out}", ["convert", *args, f"--output={tmp_path / out}"],
              "interrupted; the partial output was removed") for out in ("new/records", "empty_dir")]
    failures = cli_failures(cases, tmp_path, capfd)
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "new").exists() and not list((tmp_path / "empty_dir").iterdir())
    monkeypatch.setattr(convert, "_write", write)
    killed = (f"from nntrain.data import convert\nimport os\nwrite = convert._write\n"
              f"def killed(*a):\n    write(*a)\n    os._exit(9)\nconvert._write = killed\n"
              f"from nntrain import cli\ncli.run(['nntrain', 'convert', *{args!r}, '--output={tmp_path / 'out'}'])")
    assert subprocess.run([sys.executable, "-c", killed], capture_output=True, timeout=300).returncode == 9
    assert (tmp_path / "out" / convert.PARTIAL).exists() and not (tmp_path / "out" / "metadata.json").exists()
    other = [("another convert into the killed one's output", ["convert", *args[:-1], "--shards=1",
                                                                f"--output={tmp_path / 'out'}"],
              "holds the partial output of an interrupted convert of other splits or shards")]
    failures = cli_failures(other, tmp_path, capfd)
    assert not failures, "\n".join(failures)
    for out in ("empty_dir", "out"):
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["nntrain", "convert", *args, f"--output={tmp_path / out}"])
        assert exit_info.value.code in (0, None)
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == [
            "metadata.json", "test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord",
            "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


@pytest.mark.fast
def test_console_script_reports_error_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", "--experiment=xor",
                             f"--model_dir={tmp_path / 'run'}", "--config.train.batch_size=-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "nntrain: error: config.train.batch_size=-1 is not allowed: it must be > 0"
    assert not (tmp_path / "run").exists()


def _commands_in_one_process(argvs: list[list[str]], before: str = "", each: str = "pass",
                             after: str = "") -> subprocess.CompletedProcess:
    """`nntrain ARGV` for each of `argvs` in one new Python process (cli.run; its SystemExit caught), with the
    Python line `each` after every command, `before` and `after` around them all."""
    code = (f"import sys\n{before}\nfrom nntrain import cli\nfor argv in {argvs!r}:\n"
            "    try:\n        cli.run(['nntrain', *argv])\n    except SystemExit:\n        pass\n"
            f"    {each}\n{after}\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.fast
def test_help_and_config_are_fast_and_do_not_import_tensorflow():
    """--help, a command's --help with an experiment's values, and `config` of an experiment that monitors its
    loss (a Keras metric's direction is Keras's: that one imports it)."""
    result = _commands_in_one_process([["--help"], ["train", "--experiment=xor", "--help"],
                                       ["config", "--experiment=xor"]], before="import time; t = time.time()",
                                      after="assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
                                            "print(time.time() - t, file=sys.stderr)")
    assert result.returncode == 0, result.stderr
    assert "doctor" in result.stdout and "model.hidden_sizes" in result.stdout
    assert "train.monitor=val_loss" in result.stdout  # xor's, as `config` prints it
    assert float(result.stderr.strip().splitlines()[-1]) < 1.5


@pytest.mark.fast
def test_commands_start_tensorflow_without_the_packages_no_command_uses(tmp_path):
    """scikit-learn, pandas and matplotlib (installed here, as on Colab) are refused to TensorFlow and Keras while
    a command starts, also when its config imports Keras (mnist_mlp monitors a Keras metric); a user's experiment
    file imports pandas as usual, and all three import and work after the command."""
    experiment = tmp_path / "mine.py"
    experiment.write_text("import pandas\n\nfrom nntrain.experiments.mnist_mlp import *  # noqa: F403\n")
    result = _commands_in_one_process(
        [["train", "--experiment=mnist_mlp", "--help"], ["config", f"--config={experiment}"], ["doctor"]],
        each="print('loaded', argv[0], [name for name in cli.UNUSED_BY_COMMANDS if name in sys.modules])",
        after="import keras, pandas, sklearn.base, matplotlib.pyplot\n"
              "print('after', pandas.DataFrame({'a': [1, 2]}).shape, "
              "keras.layers.Dense(2)(pandas.DataFrame({'a': [1.0]}).to_numpy()).shape)")
    assert result.returncode == 0, result.stderr
    loaded = [line for line in result.stdout.splitlines() if line.startswith(("loaded", "after"))]
    assert loaded == ["loaded train []", "loaded config ['pandas']", "loaded doctor ['pandas']",
                      "after (2, 1) (1, 2)"], result.stdout


def test_imports_refused_only_to_the_importers_and_only_inside_the_block(tmp_path, monkeypatch):
    (tmp_path / "optional_user.py").write_text("try:\n    import tabnanny\nexcept ImportError:\n    tabnanny = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)
    with quiet.imports_refused(["tabnanny"], importers=["optional_user"]):
        import optional_user

        assert optional_user.tabnanny is None  # refused to the importer
        import tabnanny  # anyone else's import is not

    assert importlib.reload(optional_user).tabnanny is tabnanny  # nor the importer's after the block
    del sys.modules["optional_user"]


def test_flagfile_and_helpfull(tmp_path):
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--experiment=xor\n--config.train.batch_size=-2\n")
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", f"--flagfile={flagfile}",
                             f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "train.batch_size=-2" in result.stderr
    helpfull = subprocess.run([sys.executable, "-m", "nntrain.cli", "--helpfull"], capture_output=True,
                              text=True, timeout=120)
    assert "--model_dir" in helpfull.stdout and "--flagfile" in helpfull.stdout


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """64 rows of a 3-feature CSV, converted by `nntrain convert` into 2 TFRecord shards + metadata.json."""
    from nntrain import cli

    root = tmp_path_factory.mktemp("records")
    (root / "rows.csv").write_text("a,b,c,label\n" + "".join(f"{i % 5},{i % 7},{i % 3},{i % 3}\n" for i in range(64)))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "convert", f"--source=csv:{root / 'rows.csv'}", "--split=train", f"--output={root}/rec",
                 "--shards=2"])
    assert exit_info.value.code in (0, None)
    return root / "rec"


def _damaged_records(records: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    """Copies of `records`, each damaged in one way, with (name, train arguments, a phrase of the error line)."""
    shard = "train-00001-of-00002.tfrecord"

    def damaged(name: str, edit) -> str:
        copy = tmp / name
        shutil.copytree(records, copy)
        edit(copy)
        return f"--config.data.source=tfrecord:{copy}"

    def metadata(change):
        def edit(copy: Path) -> None:
            meta = json.loads((copy / "metadata.json").read_text())
            change(meta["splits"]["train"])
            (copy / "metadata.json").write_text(json.dumps(meta))
        return edit

    (tmp / "empty.tfrecord").write_bytes(b"")
    run = ["train", "--experiment=mnist_mlp", f"--model_dir={tmp / 'run'}", "--config.train.epochs=1",
           "--config.train.steps_per_epoch=2", "--config.train.batch_size=8", "--config.model.hidden_sizes=8",
           "--config.data.train_split=train", "--config.data.eval_split=train"]
    return [
        ("truncated metadata.json", [*run, damaged("m1", lambda c: (c / "metadata.json").write_text('{"form'))],
         "m1/metadata.json is damaged (Unterminated string"),
        ("metadata.json a list", [*run, damaged("m2", lambda c: (c / "metadata.json").write_text("[]"))],
         "m2/metadata.json is not an nntrain metadata file (format 'list'"),
        ("metadata.json without splits", [*run, damaged("m3", lambda c: (c / "metadata.json").write_text(
            json.dumps({**json.loads((records / "metadata.json").read_text()), "splits": None})))],
         "m3/metadata.json is damaged (AttributeError"),
        ("metadata.json count above the files'", [*run, damaged("m4", metadata(lambda s: s.update(examples=100)))],
         "but file_examples [32, 32]): write the directory again with `nntrain convert`"),
        ("metadata.json counts too high, consistently",
         [*run, damaged("m5", metadata(lambda s: s.update(examples=80, file_examples=[40, 40])))],
         "is unreadable (Input dataset was expected to contain 80 elements"),
        ("metadata.json counts too low, consistently",
         [*run, damaged("m6", metadata(lambda s: s.update(examples=40, file_examples=[20, 20])))],
         "expected to contain 40 elements but contained at least 41"),
        ("a missing shard", [*run, damaged("s1", lambda c: (c / shard).unlink())],
         f"s1/{shard}; No such file or directory): repair or rewrite its files"),
        ("a truncated shard",
         [*run, damaged("s2", lambda c: (c / shard).write_bytes((records / shard).read_bytes()[:-30]))],
         "truncated record at"),
        ("a zero-byte shard", [*run, damaged("s3", lambda c: (c / shard).write_bytes(b""))],
         "expected to contain 64 elements but contained only 32"),
        ("a zero-byte file of records", [*run, f"--config.data.source=tfrecord:{tmp / 'empty.tfrecord'}"],
         "empty.tfrecord holds no examples: check the split spec"),
    ]


def test_damaged_records_fail_cleanly(records, tmp_path, capfd):
    failures = cli_failures(_damaged_records(records, tmp_path), tmp_path, capfd)
    assert not failures, "\n".join(failures)


def test_records_damaged_after_the_check_stop_training_in_one_line(records, tmp_path, capfd):
    """With data.check=false no pass reads the files before fit: a damaged shard ends training in one line, and
    the resumed run is left at its checkpoint (config.json, metrics.jsonl as they were)."""
    from nntrain import cli

    shard = "train-00001-of-00002.tfrecord"
    good = (records / shard).read_bytes()
    run = ["train", "--experiment=mnist_mlp", f"--model_dir={tmp_path / 'run'}", "--config.train.steps_per_epoch=2",
           "--config.train.batch_size=8", "--config.model.hidden_sizes=8", "--config.data.train_split=train",
           "--config.data.eval_split=train", "--config.data.check=false", "--config.train.tensorboard=false"]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", *run, "--config.train.epochs=1", f"--config.data.source=tfrecord:{records}"])
    assert exit_info.value.code in (0, None)
    capfd.readouterr()
    other_shape = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[0.0, 1.0])),
        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString()

    def damaged(name: str, content: bytes) -> str:
        shutil.copytree(records, tmp_path / name)
        (tmp_path / name / shard).write_bytes(content)
        return f"--config.data.source=tfrecord:{tmp_path / name}"

    with tf.io.TFRecordWriter(str(tmp_path / "other.tfrecord")) as writer:
        for _ in range(32):
            writer.write(other_shape)
    resume = [*run, "--config.train.epochs=2"]
    cases = [
        ("a truncated shard", [*resume, damaged("cut", good[:-30])],
         "reading the data failed during training (truncated record at"),
        ("a shard with a bad checksum", [*resume, damaged("crc", good[:20] + bytes(20) + good[40:])],
         "corrupted record at"),
        ("a shard of other examples", [*resume, damaged("shape", (tmp_path / "other.tfrecord").read_bytes())],
         "Values size: 2 but output shape: [3]): run with --config.data.check=true to have the file named before "
         "training, or fix or re-convert it"),
    ]
    failures = cli_failures(cases, tmp_path, capfd)
    assert not failures, "\n".join(failures)


def _experiment_with(path: Path, body: str) -> str:
    """An experiment file: xor's config plus `body` (a get_model or get_callbacks)."""
    path.write_text("import keras\nfrom nntrain.experiments.xor import get_config\n" + body)
    return f"--config={path}"


def _bad_user_files(tmp: Path) -> list[tuple[str, list[str], str]]:
    """Files a user brings (CSV, experiment files, a config.json), each bad in one way."""
    (tmp / "latin1.csv").write_bytes("a,b,label\n1,2,0\n1,\xe9,1\n".encode("latin-1"))
    (tmp / "folder.csv").mkdir()
    (tmp / "config.json").write_text('{"train": {"batchsize": 2}}')
    (tmp / "list.json").write_text("[1, 2]")
    new = f"--model_dir={tmp / 'run'}"
    data = ["train", "--experiment=mnist_mlp", new, "--config.train.epochs=1", "--config.train.batch_size=2"]
    saved = nn_config.to_dict(nn_config.resolve("xor"))
    saved["experiment"], saved["model"]["name"] = "own_net", "own_net.get_model"  # as a run of own_net.py saves it
    (tmp / "own_net_run").mkdir()
    (tmp / "own_net_run" / "config.json").write_text(json.dumps(saved))
    return [
        ("csv not UTF-8", [*data, f"--config.data.source=csv:{tmp / 'latin1.csv'}"],
         "latin1.csv is not UTF-8 text ('utf-8' codec can't decode byte 0xe9"),
        ("csv a directory", [*data, f"--config.data.source=csv:{tmp / 'folder.csv'}"], "folder.csv: no such file"),
        ("get_model returns a string",
         ["train", _experiment_with(tmp / "s.py", "def get_model(c, s):\n    return 'mlp'\n"), new],
         "experiment 's': get_model(config, spec) returned str, not a keras.Model"),
        ("get_model raises",
         ["train", _experiment_with(tmp / "r.py", "def get_model(c, s):\n    raise ValueError('no')\n"), new],
         "experiment 'r': get_model(config, spec) failed: ValueError: no"),
        ("get_model of 5 outputs for a binary head",
         ["train", _experiment_with(tmp / "w.py", "def get_model(c, s):\n    i = keras.Input((2,))\n"
                                    "    return keras.Model(i, keras.layers.Dense(5)(i))\n"), new],
         "get_model(config, spec) returned a model of output shape (None, 5), but model.head='binary' on this data "
         "needs 1 units"),
        ("get_callbacks returns a number",
         ["train", _experiment_with(tmp / "n.py", "def get_callbacks(c):\n    return 3\n"), new],
         "experiment 'n': get_callbacks(config) failed: TypeError: 'int' object is not iterable"),
        ("get_callbacks returns a class, not an instance",
         ["train", _experiment_with(tmp / "k.py", "def get_callbacks(c):\n    return [keras.callbacks.History]\n"),
          new], "experiment 'k': get_callbacks(config) returned <class 'keras.src.callbacks.history.History'>, not"),
        ("--config= a JSON list", ["train", f"--config={tmp / 'list.json'}", new],
         "holds a JSON list, not a config (a JSON object of sections): give a config.json that `nntrain train` wrote"),
        ("--config= a run directory", ["train", f"--config={tmp / 'own_net_run'}/", new],
         f"is a directory: give a run's config file (--config={tmp / 'own_net_run' / 'config.json'}) or an experiment"),
        ("--config= config.json of a run of an experiment file's get_model",
         ["train", f"--config={tmp / 'own_net_run' / 'config.json'}", f"--model_dir={tmp / 'own_net_run'}"],
         "whose model the get_model() of experiment file 'own_net.py' builds (model.name='own_net.get_model'), and a "
         "config.json holds no code: pass that file, --config=PATH/own_net.py"),
        ("config.json with a misspelt key", ["train", f"--config={tmp / 'config.json'}", new],
         'Key "batchsize" does not exist and cannot be added since the config is locked. Did you mean "batch_size"'),
    ]


def test_bad_user_files_fail_cleanly(tmp_path, capfd):
    failures = cli_failures(_bad_user_files(tmp_path), tmp_path, capfd)
    assert not failures, "\n".join(failures)


def test_an_image_cut_after_its_header_is_named(tmp_path, data_config):
    """Its header passes the listing's check; decoding (in blocks of images) fails in the check pass, which names the
    file, not the block's first. (Not through the CLI in-process: TensorFlow's native warning of the failed map
    lands on this process's stderr.)"""
    from nntrain.data import images, pipeline
    from nntrain.errors import NntrainError

    (tmp_path / "cat").mkdir()
    for i in range(8):
        Image.new("L", (4, 4)).save(tmp_path / f"cat/{i}.png")
    bad = images.list_folder(str(tmp_path)).files["train"][0][5]  # mid-block in the listing's shuffled order
    Path(bad).write_bytes(Path(bad).read_bytes()[:30])
    data_config.source, data_config.image_size, data_config.channels = f"images:{tmp_path}", (4, 4), 1
    data_config.train_split, data_config.eval_split = "train", ""
    with pytest.raises(NntrainError, match=re.escape(f"Failed to initialize decoder., in {bad})")):
        pipeline.build(data_config, 2, tf.distribute.get_strategy())


@pytest.mark.parametrize("damaged", ["oracle.json", "trial_0/trial.json"])
def test_resuming_a_search_with_damaged_state_fails_cleanly(tmp_path, capfd, damaged):
    import nntrain

    search = tmp_path / "search"
    overrides = {"train.epochs": 1, "train.steps_per_epoch": 2}
    nntrain.tune("xor", str(search), overrides, strategy="cpu", max_trials=1, verbose=False)
    (search / "search" / damaged).write_text("{")
    resume = ["tune", "--experiment=xor", f"--model_dir={search}", "--resume", "--max_trials=2", "--strategy=cpu",
              "--config.train.epochs=1", "--config.train.steps_per_epoch=2"]
    failures = cli_failures([(damaged, resume, f"the search state in {search}/search is damaged (a JSON file")],
                            tmp_path, capfd)
    assert not failures, "\n".join(failures)


def test_doctor_fails_a_model_dir_tensorflow_cannot_open(capsys):
    from nntrain import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "doctor", "--json", "--model_dir=nosuch://bucket/run"])
    checks = {check["check"]: check for check in json.loads(capsys.readouterr().out)["checks"]}
    assert exit_info.value.code == 1
    assert checks["model_dir"]["status"] == "fail" and "cannot open 'nosuch://'" in checks["model_dir"]["detail"]


def test_a_model_dir_under_tilde_goes_to_the_home_directory(tmp_path, monkeypatch):
    """`--model_dir=~/runs/x`: the shell expands no ~ after `=`; nntrain does, instead of making a folder `~`."""
    from nntrain import cli

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", "--experiment=xor", "--model_dir=~/runs/xor", "--strategy=cpu",
                 "--config.train.epochs=1", "--config.train.steps_per_epoch=2"])
    assert exit_info.value.code in (0, None)
    assert (tmp_path / "home/runs/xor/model.keras").exists() and not (tmp_path / "~").exists()


def test_an_experiment_file_importing_keras_keeps_tensorflow_start_up_lines_off_stderr(tmp_path, monkeypatch):
    """TensorFlow starts while the experiment file loads (it imports keras): its C++ start-up records (`I0000 ...`,
    `E0000 ... failed call to cuInit` on a CUDA build without a GPU) stay hidden, so the error is the only line."""
    monkeypatch.delenv("NNTRAIN_TF_LOGS", raising=False)
    experiment = _experiment_with(tmp_path / "wide.py", "def get_model(c, s):\n    i = keras.Input((2,))\n"
                                  "    return keras.Model(i, keras.layers.Dense(5)(i))\n")
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", experiment,
                             f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert ".cc:" not in result.stderr and "absl::InitializeLog" not in result.stderr  # C++ records, e.g. port.cc:153]
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        result.stderr.strip().splitlines()[-1]] and "returned a model of output shape (None, 5)" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_a_train_starts_stops_it_at_once_writing_nothing(signum, tmp_path, capfd, monkeypatch):
    """SIGTERM/SIGINT during start-up (here while the data and model are built), before the run's first write:
    exit 128 + signal with the one line, and the run directory as it was: absent for a new run, hash-identical for
    one that would resume."""
    from conftest import snapshot

    import nntrain
    from nntrain import cli
    from nntrain.run import trainer

    args = ["train", *XOR, "--strategy=cpu", "--config.train.epochs=2", "--config.train.steps_per_epoch=2"]
    nntrain.train(nntrain.load_config("xor", {"train.epochs": 1, "train.steps_per_epoch": 2}), str(tmp_path / "old"),
                  strategy="cpu", verbose=0)
    before = snapshot(tmp_path / "old")
    prepare = trainer.prepare

    def signalled(*a, **kw):
        os.kill(os.getpid(), signum)
        return prepare(*a, **kw)

    monkeypatch.setattr(trainer, "prepare", signalled)
    for model_dir in ("new", "old"):
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["nntrain", *args, f"--model_dir={tmp_path / model_dir}"])
        err = capfd.readouterr().err
        assert exit_info.value.code == 128 + signum and "Traceback" not in err, err[-2000:]
        assert f"nntrain: error: stopped by {signal.Signals(signum).name} while starting, before anything was " \
               "written" in err, err[-2000:]
    assert not (tmp_path / "new").exists() and snapshot(tmp_path / "old") == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI's handlers are gone with the run
