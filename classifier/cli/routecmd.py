"""Stage 4 verb: `evidence route` (which stored articles are worth an LLM call, per thesis)."""

from __future__ import annotations

import time

import click
from rich.table import Table

from classifier.cli import main
from classifier.cli.common import Env, env_options
from classifier.errors import ConfigError


@main.command("route")
@env_options(listing=True)
@click.option("--thesis", "thesis_ids", multiple=True, metavar="ID",
              help="Route for this thesis only (repeatable; default: every thesis).")
@click.option("--dry-run", is_flag=True,
              help="Show each pair's score and decision; store nothing.")
@click.option("--limit", type=click.IntRange(1), default=None, metavar="N",
              help="With --dry-run: look at the first N unrouted articles only.")
def route_cmd(env: Env, thesis_ids: tuple[str, ...], dry_run: bool, limit: int | None) -> None:
    """Score stored articles against theses; store pairs to label ('pending') or skip.

    A pair is sent when cosine similarity (all-MiniLM-L6-v2, offline) plus a small keyword bonus
    reaches the threshold (settings [route] threshold, or the thesis's route_threshold); a thesis
    with route = false gets every article. Skips are stored with their score (reason low_score),
    feed_not_watched (the feed lists other theses) or same_story (a copy of the story was sent).

    \b
    Examples:
      evidence route --dry-run                 # scores and decisions, nothing stored
      evidence route --thesis oss-parity --dry-run --json
      evidence route                           # store pairs; `evidence label` labels them
    """
    from classifier.route import Router, pair_counts, plan_routes, route_new_articles

    theses = env.theses
    known = {t.id for t in theses.thesis}
    unknown = [t for t in thesis_ids if t not in known]
    if unknown:
        raise ConfigError(f"unknown thesis {unknown[0]!r}; known: {sorted(known)}",
                          path=env.theses_path)
    chosen = [t for t in theses.thesis if not thesis_ids or t.id in thesis_ids]
    router = Router(env.settings.route)
    t0 = time.perf_counter()
    if dry_run:
        plan = plan_routes(env.engine, chosen, env.feeds, router=router, limit=limit)
        if env.as_json:
            env.emit([p.model_dump(mode="json") for p in plan])
            return
        table = Table("article", "thesis", "score", "decision", "title", box=None)
        for p in plan:
            decision = "send" if p.state == "pending" else f"skip: {p.skip_reason.value}"
            score = "" if p.score is None else f"{p.score:.3f}"
            table.add_row(str(p.article_id), p.thesis_id, score, decision, p.title[:60])
        env.console.print(table)
        sent = sum(p.state == "pending" for p in plan)
        env.console.print(f"dry run: {sent} to send, {len(plan) - sent} to skip "
                          f"({time.perf_counter() - t0:.1f}s); nothing stored")
        return
    sent, skipped = route_new_articles(env.engine, chosen, env.feeds, router=router)
    counts = pair_counts(env.engine)
    if env.as_json:
        env.emit({"sent": sent, "skipped": skipped, "pairs": counts,
                  "model_load_s": router.load_seconds})
        return
    env.console.print(f"routed: {sent} sent, {skipped} skipped "
                      f"({time.perf_counter() - t0:.1f}s)")
    for tid, states in sorted(counts.items()):
        env.console.print(f"  {tid}: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
