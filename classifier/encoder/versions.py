"""Encoder versions of one desk: which model folders exist, how each did at the gate, which labels.

The `model_versions` table (one row per version `evidence model train --from-decisions` made)
records each folder, its parent, the decisions it learned from, the gate's verdict and status
('promoted' | 'refused'), and which one is active. No active row: the shipped model labels.
`evidence model use VERSION` (or `shipped`) changes the active one; the commands that label
(run, label, worker, demo) read it through `active_folder`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update

from classifier.encoder import SHIPPED_DIR
from classifier.errors import ConfigError
from classifier.store.engine import as_utc, utcnow, write
from classifier.store.tables import model_versions

SHIPPED = "shipped"


def models_dir() -> Path:
    """→ where new versions are written: $EVIDENCE_MODELS_DIR, else ~/.local/share/evidence-desk/encoders."""
    env = os.environ.get("EVIDENCE_MODELS_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "evidence-desk" / "encoders"


def shipped_version() -> str:
    """→ the version of the model shipped in the package."""
    from classifier.encoder.card import read_card
    return str(read_card(SHIPPED_DIR)["version"])


def list_versions(engine: Engine) -> list[dict[str, Any]]:
    """→ every recorded version, oldest first (created_at as UTC)."""
    with engine.connect() as c:
        rows = c.execute(select(model_versions).order_by(model_versions.c.created_at)).mappings()
        return [{**r, "created_at": as_utc(r["created_at"]),
                 "activated_at": as_utc(r["activated_at"])} for r in rows]


def active(engine: Engine) -> dict[str, Any] | None:
    """→ the active version's row, None when the shipped model labels."""
    return next((r for r in list_versions(engine) if r["active"]), None)


def active_folder(engine: Engine) -> str | None:
    """→ the active version's model folder (None: the shipped one); ConfigError when it is gone."""
    row = active(engine)
    if row is None:
        return None
    if not (Path(row["path"]) / "card.json").is_file():
        raise ConfigError(f"the active encoder {row['version']} is missing from {row['path']}; "
                          f"`evidence model use shipped` (or another version) to go on")
    return str(row["path"])


def register(engine: Engine, *, version: str, path: str | Path, parent: str | None,
             decisions: int, gate: dict[str, Any], promote: bool) -> None:
    """Record a new version (promoted: it becomes the active one in the same transaction)."""
    now = utcnow()
    with write(engine) as c:
        if c.execute(select(model_versions.c.version)
                     .where(model_versions.c.version == version)).first() is not None:
            raise ConfigError(f"encoder version {version} is already recorded")
        if promote:
            c.execute(update(model_versions).values(active=False))
        c.execute(insert(model_versions).values(
            version=version, path=str(Path(path).resolve()), parent=parent, created_at=now,
            decisions=decisions, gate=gate, status="promoted" if promote else "refused",
            active=promote, activated_at=now if promote else None))


def use(engine: Engine, version: str) -> dict[str, Any] | None:
    """Make `version` (or 'shipped') the active one → its row (None for shipped).
    ConfigError for an unknown version or one whose folder is gone."""
    rows = {r["version"]: r for r in list_versions(engine)}
    if version in (SHIPPED, shipped_version()):
        with write(engine) as c:
            c.execute(update(model_versions).values(active=False))
        return None
    if version not in rows:
        known = ", ".join([SHIPPED, *rows]) or SHIPPED
        raise ConfigError(f"no encoder version {version!r}; known: {known}")
    if not (Path(rows[version]["path"]) / "card.json").is_file():
        raise ConfigError(f"encoder {version}'s folder is gone: {rows[version]['path']}")
    with write(engine) as c:
        c.execute(update(model_versions).values(active=False))
        c.execute(update(model_versions).where(model_versions.c.version == version)
                  .values(active=True, activated_at=utcnow()))
    return {**rows[version], "active": True}
