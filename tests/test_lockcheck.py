"""scripts/lockcheck.py: the hashed locks agree with pyproject.toml, and a change that breaks that
is caught with the package and the file named."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "lockcheck.py"


def run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)],
                          check=False, capture_output=True, text=True)


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name in ("lock.txt", "lock-test.txt"):
        shutil.copy(ROOT / "requirements" / name, tmp_path / "requirements" / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_repository_locks_agree_with_pyproject():
    proc = run(ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "requirements/lock.txt:" in proc.stdout and "in step with pyproject.toml" in proc.stdout


def test_a_range_that_excludes_the_pinned_version_fails(copy: Path):
    edit(copy / "pyproject.toml", '"httpx>=0.27,<1"', '"httpx>=0.99,<1"')
    proc = run(copy)
    assert proc.returncode == 1
    assert re.search(r"requirements/lock\.txt: httpx==\S+ is outside httpx<1,>=0\.99", proc.stderr)
    assert "requirements/lock-test.txt: httpx" in proc.stderr


def test_a_new_dependency_not_in_the_lock_fails(copy: Path):
    edit(copy / "pyproject.toml", '"httpx>=0.27,<1",', '"httpx>=0.27,<1",\n  "left-pad-py>=1",')
    proc = run(copy)
    assert proc.returncode == 1
    assert "left-pad-py>=1 (pyproject.toml) is not pinned" in proc.stderr


def test_a_dependency_removed_from_pyproject_fails(copy: Path):
    edit(copy / "pyproject.toml", '  "langdetect>=1.0.9,<2",\n', "")
    proc = run(copy)
    assert proc.returncode == 1
    assert "langdetect is locked as a requirement of pyproject.toml, which no longer lists it" \
        in proc.stderr


def test_a_test_extra_missing_from_the_test_lock_fails(copy: Path):
    edit(copy / "pyproject.toml", '"pytest>=8",', '"pytest>=8", "hypothesis>=6",')
    proc = run(copy)
    assert proc.returncode == 1
    assert "requirements/lock-test.txt: hypothesis>=6 (pyproject.toml) is not pinned" in proc.stderr
    assert "requirements/lock.txt: hypothesis" not in proc.stderr  # the demo lock has no test extra


def test_a_pin_without_hash_and_locks_that_differ_fail(copy: Path):
    lock = copy / "requirements" / "lock.txt"
    text = lock.read_text()
    m = re.search(r"^(click==(\S+)) \\\n((?:    --hash=\S+(?: \\)?\n)+)", text, re.MULTILINE)
    assert m, "click's pin in lock.txt"
    lock.write_text(text.replace(m.group(0), m.group(1) + "\n"))
    test_lock = copy / "requirements" / "lock-test.txt"
    edit(test_lock, f"click=={m.group(2)} ", "click==8.1.0 ")
    proc = run(copy)
    assert proc.returncode == 1
    assert f"requirements/lock.txt: click=={m.group(2)} has no --hash" in proc.stderr
    assert f"click: requirements/lock.txt pins {m.group(2)}, requirements/lock-test.txt pins " \
        "8.1.0" in proc.stderr


def test_extract_gives_an_installable_pin_with_hashes():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--extract", "llama-cpp-python"],
                          check=False, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("llama-cpp-python==") and lines[0].endswith("\\")
    assert all(line.strip().startswith("--hash=sha256:") for line in lines[1:])
    assert not lines[-1].endswith("\\")
