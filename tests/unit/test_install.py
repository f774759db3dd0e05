"""The README's install: the project as a wheel, in a fresh virtualenv, runs as ``ari-realtime``.

README ("Installing") has operators run ``python3 -m venv /opt/ari-realtime``
and ``/opt/ari-realtime/bin/pip install /path/to/clone``. This does the same
in a throwaway directory, without the network: the wheel is built from a copy
of what the Dockerfile copies, with this environment's setuptools (no build
isolation, which would download it), and installed with ``--no-deps``; the
new virtualenv borrows this environment's dependencies through a ``.pth``
file. Then the installed command must answer ``--help`` and run ``check``,
importing the package from the virtualenv, not from the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _setuptools_builds_it() -> bool:
    """pyproject.toml needs setuptools >= 77 (``license = "MIT"``); the test extra installs it."""
    try:
        major = int(version("setuptools").split(".")[0])
    except (ImportError, ValueError):
        return False
    return major >= 77


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "controller", src / "controller", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    # An old setuptools (a virtualenv made before the test extra required a
    # newer one) falls back to build isolation, which downloads setuptools.
    offline = ("--no-build-isolation",) if _setuptools_builds_it() else ()
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline,
        "-w", wheels, src, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("ari_realtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in ("controller/py.typed", "controller/http/static/index.html"):
        assert packaged in names, f"{packaged} is not in the wheel"
    assert not [n for n in names if n.startswith(("tests/", "asterisk/", "bench/"))]

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-index", wheel, cwd=tmp_path,
    )  # fmt: skip
    site = _run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    )
    # The dependencies: this environment's, appended to the new one's path.
    Path(site.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        ARI_URL="http://127.0.0.1:1",
        ARI_PASSWORD="not-a-real-password",
        REALTIME_URL="ws://127.0.0.1:1/v1/realtime",
        OPENAI_API_KEY="sk-not-a-real-key",
    )
    where = _run(
        python, "-c", "import controller; print(controller.__file__)", cwd=tmp_path, env=env
    )
    assert Path(where.strip()).is_relative_to(venv), where
    command = venv / "bin" / "ari-realtime"
    assert "check" in _run(command, "--help", cwd=tmp_path, env=env)
    proc = subprocess.run(
        [command, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # nothing to reach here
    assert "FAIL ARI: cannot reach Asterisk at http://127.0.0.1:1" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
