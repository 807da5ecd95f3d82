"""Gold items: JSON Lines files in the format of ../shared/spec/labels.md ("Gold files").

Every source of gold (hand-written files, editors' decisions exported by `evidence gold export`,
external datasets through `adapters/`) becomes `EvalItem`s: the article, the thesis it is judged
against, and a `GoldTarget` that says which fields the gold actually judges. Hand-written and
review gold judge every field; external sets judge only what their labels can map to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from classifier.config import ThesesFile, ThesisConfig
from classifier.errors import ConfigError
from classifier.records import GoldLabel, Record

FIELDS = ("relevant", "evidence_type", "direction", "strength", "trigger")
ALL_FIELDS = frozenset(FIELDS)
ITEM_KEYS = {"id", "thesis", "article", "label", "source", "note"}
ARTICLE_KEYS = {"title", "source", "url", "published", "text"}


class GoldTarget(Record):
    """The gold judgment of one item; fields outside `scored` are unknown, not null."""

    relevant: bool | None = None
    evidence_type: str | None = None
    direction: str | None = None
    strength: str | None = None
    trigger: str | None = None
    scored: frozenset[str] = ALL_FIELDS

    @classmethod
    def from_label(cls, label: GoldLabel) -> GoldTarget:
        """Full gold label → a target that scores every field."""
        return cls(relevant=label.relevant,
                   evidence_type=label.evidence_type.value if label.evidence_type else None,
                   direction=label.direction.value if label.direction else None,
                   strength=label.strength.value if label.strength else None,
                   trigger=label.trigger)

    def value(self, field: str) -> str | bool | None:
        """Field name → the gold value (None for null)."""
        return getattr(self, field)


class EvalItem(Record):
    """One article judged against one thesis, with its gold label and where it came from."""

    id: str
    thesis: ThesisConfig
    title: str = ""
    text: str
    source: str | None = None
    url: str | None = None
    published: datetime | None = None
    gold: GoldTarget
    origin: str = "gold"  # file stem, "review", or the external dataset's name
    stratum: str | None = None  # the dataset's own label, for stratified sampling and FNC scoring


def file_sha256(paths: Iterable[str | Path]) -> str:
    """Gold file paths → SHA-256 over their bytes in the given order (names excluded)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _fail(path: Path, line: int, message: str) -> ConfigError:
    return ConfigError(message, path=str(path), line=line)


def parse_gold_line(obj: object, *, theses: ThesesFile, path: Path, line: int) -> EvalItem:
    """One decoded JSON line → EvalItem, or ConfigError naming file, line and key."""
    if not isinstance(obj, dict):
        raise _fail(path, line, "gold line is not a JSON object")
    unknown = sorted(set(obj) - ITEM_KEYS)
    if unknown:
        raise _fail(path, line, f"unknown keys {unknown}; allowed {sorted(ITEM_KEYS)}")
    for key in ("id", "thesis", "article", "label"):
        if key not in obj:
            raise _fail(path, line, f"missing key {key!r}")
    art = obj["article"]
    if not isinstance(art, dict) or not isinstance(art.get("text"), str) or not art["text"].strip():
        raise _fail(path, line, "article must be an object with a non-empty 'text'")
    bad = sorted(set(art) - ARTICLE_KEYS)
    if bad:
        raise _fail(path, line, f"unknown article keys {bad}; allowed {sorted(ARTICLE_KEYS)}")
    try:
        thesis = theses.get(str(obj["thesis"]))
    except ConfigError as e:
        raise _fail(path, line, str(e)) from e
    try:
        label = GoldLabel.model_validate(obj["label"])
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "label"
        raise _fail(path, line, f"invalid label ({where}): {first['msg']}") from e
    if label.trigger is not None and label.trigger not in {t.id for t in thesis.trigger}:
        raise _fail(path, line, f"trigger {label.trigger!r} is not a trigger of thesis {thesis.id!r}")
    try:
        published = datetime.fromisoformat(art["published"].replace("Z", "+00:00")) \
            if art.get("published") else None
    except (AttributeError, ValueError) as e:
        raise _fail(path, line, f"article.published is not an ISO 8601 time: {art['published']!r}") from e
    return EvalItem(id=str(obj["id"]), thesis=thesis, title=art.get("title") or "", text=art["text"],
                    source=art.get("source"), url=art.get("url"), published=published,
                    gold=GoldTarget.from_label(label),
                    origin=str(obj.get("source") or path.stem))


def load_gold(paths: Sequence[str | Path], theses: ThesesFile) -> list[EvalItem]:
    """Gold JSONL paths + theses → items in file order; duplicate ids or bad lines are ConfigErrors."""
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read gold file: {e.strerror}", path=str(path)) from e
        for n, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise _fail(path, n, f"not valid JSON: {e.msg}") from e
            item = parse_gold_line(obj, theses=theses, path=path, line=n)
            if item.id in seen:
                raise _fail(path, n, f"duplicate gold id {item.id!r} (first in {seen[item.id]})")
            seen[item.id] = f"{path}"
            items.append(item)
    return items


def items_sha256(items: Sequence[EvalItem]) -> str:
    """Items → SHA-256 over id, thesis, text and gold (for runs on adapter samples and files alike)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.thesis.content_hash, it.title, it.text,
                             it.gold.model_dump(mode="json", exclude={"scored"}),
                             sorted(it.gold.scored)], sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()
