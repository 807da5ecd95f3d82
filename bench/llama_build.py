"""How long llama-cpp-python takes to build from source, as `make` builds it and untrimmed.

llama-cpp-python ships only a source archive on PyPI, so the first install on a machine compiles
llama.cpp (the longest step of `make demo`). The Makefile passes `LLAMA_CMAKE_ARGS` (read from
the Makefile here, so the two cannot drift) through `CMAKE_ARGS`: it leaves out the multimodal
library (mtmd, which the product never loads: text-only chat completions). llama.cpp's examples,
tools, tests and server are already off when it is built as a subproject; its `common` library is
forced on by llama-cpp-python's CMakeLists and cannot be left out without patching it.

Both variants are built in this one run from the same source archive, one after the other, with
pip's cache off (`pip wheel --no-cache-dir`), and each built wheel is then loaded the way the
product loads it: `llama_cpp.Llama` on the embedded GGUF (or the small SmolLM2 one) and a short
chat completion. Printed: wall seconds per variant, their ratio, wheel sizes and the shared
libraries each wheel carries.

    .venv/bin/python bench/llama_build.py                     # both variants (~12 min on 2 cores)
    .venv/bin/python bench/llama_build.py --only trimmed --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.3.36"


def makefile_cmake_args() -> str:
    """The `LLAMA_CMAKE_ARGS ?= ...` line of the Makefile."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^LLAMA_CMAKE_ARGS\s*\?=\s*(.*)$", text, re.MULTILINE)
    if not m:
        raise SystemExit("Makefile has no `LLAMA_CMAKE_ARGS ?= ...` line")
    return m.group(1).strip()


def fetch_sdist(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={VERSION}", "-d", str(dest), "-q"], check=True)
    return next(dest.glob("llama_cpp_python-*.tar.gz"))


def build(sdist: Path, cmake_args: str | None, out: Path) -> dict:
    env = dict(os.environ)
    env.pop("CMAKE_ARGS", None)
    if cmake_args:
        env["CMAKE_ARGS"] = cmake_args
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                           "-q", "-w", str(out), str(sdist)], check=False, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"build failed (CMAKE_ARGS={cmake_args!r}), exit {proc.returncode}")
    wheel = next(out.glob("llama_cpp_python-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        libs = sorted({Path(n).name for n in zf.namelist() if Path(n).name.endswith(".so")})
    return {"cmake_args": cmake_args or "", "seconds": round(seconds, 1),
            "wheel": str(wheel), "wheel_mb": round(wheel.stat().st_size / 1e6, 2), "libs": libs}


LOAD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import llama_cpp
from llama_cpp import Llama
import llama_cpp.llama_chat_format  # the chat-format module the product's calls go through
assert llama_cpp.__file__.startswith(sys.argv[1]), llama_cpp.__file__
t = time.perf_counter()
llm = Llama(model_path=sys.argv[2], n_ctx=512, n_threads=2, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say OK."}], max_tokens=8,
                                 temperature=0.0)
print(repr(out["choices"][0]["message"]["content"]), round(time.perf_counter() - t, 1))
"""


def load_check(wheel: Path, gguf: Path, scratch: Path) -> str:
    """Unpack the wheel and run one chat completion with it (the venv's numpy/jinja2/diskcache)."""
    target = scratch / wheel.stem
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    proc = subprocess.run([sys.executable, "-c", LOAD, str(target), str(gguf)],
                          check=False, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{wheel.name} does not load the model:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip()


def model_file() -> Path:
    sys.path.insert(0, str(ROOT))
    from classifier import model

    path = model.model_path()
    if path.exists():
        return path
    small = model.find_smollm2()
    if small is None:
        raise SystemExit("no GGUF installed: run `make install` first")
    return small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="llama-cpp-python source archive (default: pip "
                    "download of the pinned version)")
    ap.add_argument("--only", choices=["default", "trimmed"], help="build one variant")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    trimmed = makefile_cmake_args()
    gguf = model_file()
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        scratch = Path(tmp)
        sdist = args.sdist or fetch_sdist(scratch / "src")
        results = {}
        variants = [("default", None), ("trimmed", trimmed)]
        for name, cmake_args in variants:
            if args.only and name != args.only:
                continue
            print(f"building {name} (CMAKE_ARGS={shlex.quote(cmake_args or '')}) ...", flush=True)
            r = build(sdist, cmake_args, scratch / name)
            r["load_check"] = load_check(Path(r["wheel"]), gguf, scratch)
            r.pop("wheel")
            results[name] = r
            print(f"  {r['seconds']} s, wheel {r['wheel_mb']} MB, libs {', '.join(r['libs'])}; "
                  f"loads: {r['load_check']}", flush=True)
    summary = {"llama_cpp_python": VERSION, "cpus": os.cpu_count(), "gguf": gguf.name,
               "variants": results}
    if len(results) == 2:
        d, t = results["default"]["seconds"], results["trimmed"]["seconds"]
        summary["trimmed_over_default"] = round(t / d, 3)
        print(f"trimmed / default build time: {t / d:.3f} ({t:.0f} s vs {d:.0f} s, "
              f"{d - t:.0f} s saved)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
