"""The wheel as a new user gets it: built from the checkout, installed (not editable) into a fresh virtual
environment, and run from a folder outside the repository.

The fresh environment gets its dependencies (numpy, onnxruntime, …) from the running interpreter's
site-packages through a ``.pth`` path line — no network — but ``emostream`` itself only from the wheel:
the test checks where it was imported from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import urllib.request
import zipfile
from pathlib import Path

import pytest
from needs import unavailable

ROOT = Path(__file__).resolve().parent.parent


def sh(*argv, cwd, timeout=300, env=None):
    out = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{argv[0]} failed ({out.returncode}): {out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` on a copy of what a build reads (pyproject, README, the package): stale build/ folders
    in the checkout can neither leak into the wheel nor be written there."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:  # the dev extra installs it; the build needs no network
        unavailable(f"setuptools {setuptools.__version__} cannot build this pyproject offline: "
                    "pip install 'setuptools>=77'")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT / "emostream", src / "emostream", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
       "-w", work / "dist", src, cwd=work)
    (built,) = (work / "dist").glob("emostream-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "fresh"
    sh(sys.executable, "-m", "venv", "--without-pip", env_dir, cwd=env_dir.parent)
    python = env_dir / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel,
       cwd=env_dir.parent)
    site = sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=env_dir).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_dependencies_from_test_runner.pth").write_text("\n".join(sorted(ours)) + "\n")
    return env_dir


@pytest.fixture
def outside(tmp_path) -> tuple[Path, dict]:
    """A working folder outside the checkout, and an environment that points nowhere near it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    assert ROOT not in tmp_path.parents
    return tmp_path, env


def test_the_wheel_installs_one_package_with_its_model_and_no_training_artefacts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"emostream"}
    for asset in ("emotion_crnn.onnx", "sample.flac", "dashboard.html"):
        assert f"emostream/assets/{asset}" in names
    assert not [n for n in names if n.endswith((".keras", ".npz", ".csv")) or "/models/" in n or "evaluation" in n
                and not n.startswith("emostream/train/")]
    assert not [n for n in names if n.startswith(("tests/", "stream/", "features/", "train/", "bench/"))]
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "emostream-score = emostream.score:main" in entry_points


def test_installed_package_imports_from_the_venv_and_runs_the_readme_example(venv, outside):
    cwd, env = outside
    python = venv / "bin" / "python"
    where = sh(python, "-c", "import emostream; print(emostream.__file__, emostream.__version__)", cwd=cwd, env=env)
    path, version = where.stdout.split()
    assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT)
    import emostream

    assert version == emostream.__version__
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    out = sh(python, "-c", example, cwd=cwd, env=env).stdout
    assert re.search(r"^clip: \w+ \d+% over \d+ windows", out, re.M) and "utterance 0.00-" in out
    assert re.search(r"^file: \w+ over 15\.6 s$", out, re.M)


@pytest.mark.data
def test_installed_commands_score_a_ravdess_clip_and_serve_it_to_a_subscriber(venv, outside, ravdess_dir):
    cwd, env = outside
    clip = sorted((ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_02").glob("03-01-05-*"))[0]
    bin_dir = venv / "bin"
    scored = sh(bin_dir / "emostream-score", clip, "--format", "jsonl", cwd=cwd, env=env)
    (line,) = [json.loads(x) for x in scored.stdout.splitlines()]
    assert set(line) >= {"file", "top", "top_p", "probabilities", "duration_s", "windows"}
    assert line["top"] in line["probabilities"] and line["duration_s"] > 2.5 and line["windows"] >= 1

    daemon = subprocess.Popen([str(bin_dir / "emostream-daemon"), "--file", str(clip), "--fast",
                               "--wait-for-subscribers", "1", "--port", "0"], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for log_line in daemon.stderr:
            if match := re.search(r"listening on ws://[\d.]+:(\d+)", log_line):
                port = int(match.group(1))
                break
        assert port, "the installed daemon did not start"
        threading.Thread(target=daemon.stderr.read, daemon=True).start()  # its log never fills the pipe
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:  # the dashboard ships too
            assert b"<html" in page.read(2000).lower()
        sub = sh(bin_dir / "emostream-subscribe", f"ws://127.0.0.1:{port}", "--until-end", cwd=cwd, env=env,
                 timeout=60)
        lines = sub.stdout.splitlines()
        assert lines[0].startswith(f"# file {clip.name}") and lines[-1].startswith("# end: source ended")
        assert sum("%" in x and not x.startswith("#") for x in lines) >= 1
        assert daemon.wait(timeout=30) == 0
    finally:
        daemon.kill()
