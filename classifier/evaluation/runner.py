"""Run the labeler over eval items and keep a run record that survives interruption.

A run folder holds:
    run.json           what was run (model, prompt hash, gold files and hashes, time) + figures
    predictions.jsonl  one ItemResult per item, appended as each item finishes
    report.md, report.html, img/*.png   written by `report.py`

Resuming: running again into the same folder with the same model, prompt and items labels only
the items without a result (items that failed on transport are tried again; items whose answer
stayed invalid are kept as failures). A folder holding a different run is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from classifier.backends.base import Backend
from classifier.config import LabelSettings
from classifier.errors import ConfigError, LabelingFailed, TransportError
from classifier.evaluation import metrics
from classifier.evaluation.gold import EvalItem, items_sha256
from classifier.evaluation.results import ItemResult, result_from_label
from classifier.label import label_article, model_id
from classifier.prompt import prompt_hash
from classifier.store.engine import utcnow

RUN_FILE = "run.json"
PREDICTIONS = "predictions.jsonl"
RETRY_ON_RESUME = {"transport"}  # error kinds worth a second try; invalid answers are results

Progress = Callable[[int, int, str], None]


def default_run_dir(model: str, *, root: str | Path = "eval/runs") -> Path:
    """Model id → eval/runs/<UTC time>-<model slug>."""
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in model)[:60]
    return Path(root) / f"{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{slug}"


def load_results(run_dir: str | Path) -> list[ItemResult]:
    """Run folder → its item results, the last line per item id winning."""
    path = Path(run_dir) / PREDICTIONS
    if not path.exists():
        return []
    by_id: dict[str, ItemResult] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if not line.strip():
            continue
        try:
            r = ItemResult.model_validate_json(line)
        except ValueError:
            continue  # a line cut by an interruption: that item is simply not done yet
        by_id[r.id] = r
    return list(by_id.values())


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Run folder → its run.json as a dict (ConfigError when it is not a run folder)."""
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"not a run folder (no {RUN_FILE}): {e.strerror}", path=str(path)) from e


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def label_item(item: EvalItem, backend: Backend, settings: LabelSettings) -> ItemResult:
    """One item → its ItemResult: a label with costs, or the failure with what it cost."""
    base: dict[str, Any] = {"id": item.id, "thesis": item.thesis.id, "origin": item.origin,
                            "stratum": item.stratum, "gold": item.gold}
    started = time.perf_counter()
    try:
        out = label_article(backend, item.thesis, title=item.title, text=item.text,
                            source=item.source, published=item.published, settings=settings,
                            delimiter_key=f"eval:{settings.seed}:{item.id}")
    except (LabelingFailed, TransportError) as e:
        calls = getattr(e, "calls", [])
        kind = "transport" if isinstance(e, TransportError) else "invalid"
        return ItemResult(**base, error_type=f"{kind}:{e.error_type}", error=str(e)[:2000],
                          tokens_in=sum(c.tokens_in for c in calls),
                          tokens_out=sum(c.tokens_out for c in calls),
                          cost_usd=sum(c.cost_usd for c in calls),
                          latency_ms=(time.perf_counter() - started) * 1000,
                          attempts=len(calls))
    m = out.meta
    return ItemResult(**base, **result_from_label(item, out.label),
                      tokens_in=m.tokens_in, tokens_out=m.tokens_out, cost_usd=m.cost_usd,
                      latency_ms=m.latency_ms, attempts=m.attempts)


def run_config(items: Sequence[EvalItem], backend: Backend, *,
               gold: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run: model, prompt hash, items hash and where the gold came from."""
    return {"model": model_id(backend), "backend": backend.name, "prompt_hash": prompt_hash(),
            "items_sha256": items_sha256(items), "n_items": len(items), "gold": gold}


def run_eval(items: Sequence[EvalItem], backend: Backend, run_dir: str | Path, *,
             gold: dict[str, Any], settings: LabelSettings | None = None,
             progress: Progress | None = None, n_resamples: int = 1000,
             limit: int | None = None) -> dict[str, Any]:
    """Items + backend → run record (run.json written, predictions appended), resuming if the
    folder holds the same run; `limit` labels at most that many new items (then stops)."""
    settings = settings or LabelSettings()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(items, backend, gold=gold)
    run_path = run_dir / RUN_FILE
    record: dict[str, Any]
    if run_path.exists():
        record = load_run(run_dir)
        old = record.get("config", {})
        diff = [k for k in ("model", "prompt_hash", "items_sha256") if old.get(k) != config[k]]
        if diff:
            raise ConfigError(f"this folder holds a different run ({', '.join(diff)} differ); "
                              f"use another --out", path=str(run_dir))
    else:
        record = {"version": 1, "config": config, "started_at": utcnow().isoformat(),
                  "status": "running", "label_settings": settings.model_dump(mode="json"),
                  "sessions": []}
    done = {r.id for r in load_results(run_dir)
            if not (r.error_type and r.error_type.split(":")[0] in RETRY_ON_RESUME)}
    todo = [it for it in items if it.id not in done]
    if limit is not None:
        todo = todo[:limit]
    session = {"started_at": utcnow().isoformat(), "resumed_with_done": len(done), "labeled": 0}
    record["sessions"].append(session)
    record["status"] = "running"
    _write_json(run_path, record)
    started = time.perf_counter()
    pred_path = run_dir / PREDICTIONS
    if pred_path.exists() and pred_path.stat().st_size and not pred_path.read_bytes().endswith(b"\n"):
        with pred_path.open("a", encoding="utf-8") as out:
            out.write("\n")  # end a line an interruption cut, so the next result starts clean
    try:
        with pred_path.open("a", encoding="utf-8") as out:
            for n, item in enumerate(todo, start=1):
                result = label_item(item, backend, settings)
                out.write(result.model_dump_json() + "\n")
                out.flush()
                session["labeled"] = n
                if progress:
                    progress(len(done) + n, len(items), item.id)
    except BaseException as e:  # backend gone, Ctrl-C: say so in run.json, keep what is done
        session["wall_s"] = round(time.perf_counter() - started, 3)
        session["stopped"] = f"{type(e).__name__}: {e}"[:500]
        record["status"] = "interrupted"
        _write_json(run_path, record)
        raise
    session["wall_s"] = round(time.perf_counter() - started, 3)
    session["finished_at"] = utcnow().isoformat()
    ids = {it.id for it in items}
    results = [r for r in load_results(run_dir) if r.id in ids]
    record["status"] = "done" if len(results) == len(items) else "partial"
    record["finished_at"] = utcnow().isoformat()
    record["wall_s"] = round(sum(s.get("wall_s", 0.0) for s in record["sessions"]), 3)
    record["metrics"] = metrics.compute(results, n_resamples=n_resamples)
    by_origin = {}
    for origin in sorted({r.origin for r in results}):
        subset = [r for r in results if r.origin == origin]
        if len(subset) != len(results):
            by_origin[origin] = metrics.compute(subset, n_resamples=n_resamples)["figures"]
    record["metrics_by_origin"] = by_origin
    _write_json(run_path, record)
    return record


def parse_time(value: str) -> datetime:
    """ISO date or time → aware datetime (UTC when no zone is given)."""
    from classifier.store.engine import as_utc
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))  # type: ignore[return-value]
    except ValueError as e:
        raise ConfigError(f"not an ISO date or time: {value!r}") from e
