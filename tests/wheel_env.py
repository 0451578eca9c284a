"""The built wheel installed (not editable) in a fresh virtual environment, for tests that run nntrain as a user
who installed it would: tests/test_wheel.py and tests/test_docs.py share one build (conftest.py's fixtures).

The fresh environment is a venv without pip whose site-packages holds .pth lines naming this interpreter's
site-packages directories: the dependencies come from there (no download), while the repository's editable
install is not seen (a .pth line adds a directory without running the .pth files in it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGING_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    """Runs `command`, asserting exit code 0 (the assertion shows the end of its stderr)."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result


def clean_env(venv: Path) -> dict:
    """The environment of a user who activated `venv`: none of this checkout on PYTHONPATH, and precision=auto
    as on the user's CPU (conftest's NNTRAIN_CPUINFO is the tests' own; its XLA_FLAGS stays: the same programs,
    compiled without LLVM's optimisation passes)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "NNTRAIN_CPUINFO")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}


def fresh_venv(directory: Path) -> Path:
    """A venv whose dependencies are this interpreter's site-packages, and a Jupyter kernel that runs it."""
    run([sys.executable, "-m", "venv", "--without-pip", directory], timeout=120)
    python = directory / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60).stdout
    Path(site.strip(), "dependencies.pth").write_text("".join(f"{path}\n" for path in _site_packages()))
    kernel = directory / "share" / "jupyter" / "kernels" / directory.name
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": directory.name, "language": "python"}))
    return directory


def _site_packages() -> list[str]:
    """This interpreter's site-packages and those its .pth files add (a worktree's venv shares another's)."""
    own = sysconfig.get_paths()["purelib"]
    return [own, *(path for path in sys.path if path.endswith("site-packages") and path != own)]


def build_wheel(root: Path) -> Path:
    """nntrain's wheel, built in `root` from a copy of the package files (the checkout gets no build/ or egg-info)."""
    source = root / "source"
    for package in ("nntrain", "experiments"):  # experiments/ installs as nntrain.experiments (setup.cfg package_dir)
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGING_FILES:
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", root / "dist",
         source], timeout=300)
    (built,) = (root / "dist").glob("nntrain-*.whl")
    return built


def install(wheel: Path, directory: Path) -> Path:
    """A fresh venv in `directory` with `wheel` installed (not editable)."""
    venv = fresh_venv(directory)
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", "--quiet", wheel],
        timeout=300, env=clean_env(venv))
    return venv
