"""`nntrain doctor`: every check has a status, problems have a fix, --json is one object."""

from __future__ import annotations

import json

from nntrain import cli


def test_doctor_json_reports_versions_devices_and_tpu_kernels(tmp_path, capsys):
    try:
        cli.run(["nntrain", "doctor", "--json", f"--model_dir={tmp_path / 'new'}"])
    except SystemExit as e:
        assert e.code in (0, None)
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    for name in ("python", "tensorflow", "keras", "tensorflow-datasets", "keras-tuner", "devices",
                 "tpu kernels", "gs:// paths", "model_dir"):
        assert name in checks, name
    assert checks["model_dir"]["status"] == "ok"
    assert "CPU: " in checks["devices"]["detail"]
    assert checks["tpu kernels"]["status"] == "info" and "tensorflow-tpu==" in checks["tpu kernels"]["fix"]
    assert all(c["fix"] for c in checks.values() if c["status"] in ("warn", "fail"))


def test_doctor_fails_on_unwritable_model_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        cli.run(["nntrain", "doctor", f"--model_dir={blocker}/run"])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    assert code == 1
    assert "[fail] model_dir" in out and "fix:" in out
