"""Check that the hashed lock files agree with pyproject.toml.

`make demo` installs requirements/lock.txt (the dependencies plus the `local` extra) and
`make test` requirements/lock-test.txt (plus the `test` extra), both with --require-hashes, so two
fresh machines get the same versions. Both are written by pip-compile (`make lock`). This check
fails, naming the package and the file, when

- a requirement of pyproject.toml (dependencies and the lock's extras) is not pinned in the lock,
  or its pinned version is outside the range pyproject.toml allows;
- the lock names a package as required by pyproject.toml that pyproject.toml no longer lists;
- a pinned package carries no hash;
- the two locks pin a shared package to different versions.

    python3 scripts/lockcheck.py            # exit 0 and one line per lock, or 1 and every problem
    python3 scripts/lockcheck.py --root DIR
    python3 scripts/lockcheck.py --extract llama-cpp-python --lock requirements/lock.txt
                                            # that package's pin and hashes, as a requirements file

It needs only the standard library and `packaging` (pip's own copy when it is not installed), so
the Makefile runs it before installing anything.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a fresh venv: pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

LOCKS = {"requirements/lock.txt": ("local",), "requirements/lock-test.txt": ("local", "test")}
PROJECT = "evidence-desk"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_lock(path: Path) -> tuple[dict[str, str], set[str], set[str]]:
    """→ ({name: version}, names with a hash, names the lock says pyproject.toml requires)."""
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    direct: set[str] = set()
    current = None
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = m.group(2)
            if "--hash=" in line:
                hashed.add(current)
            continue
        stripped = line.strip()
        if current and stripped.startswith("--hash="):
            hashed.add(current)
        elif current and stripped.startswith("#"):
            via = stripped.lstrip("#").strip().removeprefix("via ").strip()
            if via.startswith(f"{PROJECT} (pyproject.toml)"):
                direct.add(current)
    return pins, hashed, direct


def requirements(pyproject: dict, extras: tuple[str, ...]) -> list[Requirement]:
    project = pyproject["project"]
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in extras:
        reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get(extra, [])]
    return reqs


def check(root: Path) -> list[str]:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    problems: list[str] = []
    locks: dict[str, dict[str, str]] = {}
    for rel, extras in LOCKS.items():
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing (run `make lock`)")
            continue
        pins, hashed, direct = read_lock(path)
        locks[rel] = pins
        wanted = set()
        for req in requirements(pyproject, extras):
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            wanted.add(name)
            if name not in pins:
                problems.append(f"{rel}: {req} (pyproject.toml) is not pinned; run `make lock`")
            elif not req.specifier.contains(Version(pins[name]), prereleases=True):
                problems.append(f"{rel}: {name}=={pins[name]} is outside {req} (pyproject.toml); "
                                "run `make lock`")
        for name in sorted(direct - wanted):
            problems.append(f"{rel}: {name} is locked as a requirement of pyproject.toml, which no "
                            "longer lists it; run `make lock`")
        for name in sorted(set(pins) - hashed):
            problems.append(f"{rel}: {name}=={pins[name]} has no --hash (pip --require-hashes "
                            "refuses it)")
    if len(locks) == 2:
        (a, pa), (b, pb) = locks.items()
        for name in sorted(set(pa) & set(pb)):
            if pa[name] != pb[name]:
                problems.append(f"{name}: {a} pins {pa[name]}, {b} pins {pb[name]}")
        for name in sorted(set(pa) - set(pb)):
            problems.append(f"{b}: lacks {name}=={pa[name]} that {a} pins")
    return problems


def extract(path: Path, name: str) -> str:
    """→ one package's pin line with its hashes, from a lock (a requirements file of its own)."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            if out:
                break
            if canonicalize_name(m.group(1)) == canonicalize_name(name):
                out.append(line)
        elif out and line.strip().startswith("--hash="):
            out.append(line)
    if not out:
        raise SystemExit(f"{path}: {name} is not pinned")
    return "\n".join(out).rstrip(" \\") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--extract", metavar="NAME", help="print NAME's pin and hashes from --lock")
    ap.add_argument("--lock", type=Path, default=Path("requirements/lock.txt"))
    args = ap.parse_args()
    if args.extract:
        sys.stdout.write(extract(args.root / args.lock, args.extract))
        return 0
    problems = check(args.root)
    if problems:
        print("the locks disagree with pyproject.toml:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    for rel in LOCKS:
        pins, _, _ = read_lock(args.root / rel)
        print(f"{rel}: {len(pins)} packages pinned with hashes, in step with pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
