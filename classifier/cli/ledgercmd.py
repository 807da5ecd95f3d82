"""Stage 7 verbs: `evidence ledger` (suggestion, apply, history) and `evidence alerts`."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from classifier.cli import main
from classifier.cli.common import Env, env_options
from classifier.errors import ConfigError


class _DefaultShow(click.Group):
    """`evidence ledger THESIS` means `evidence ledger show THESIS`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        elif not args:
            args = ["show"]
        return super().parse_args(ctx, args)


def _pct(p: float | None) -> str:
    return "—" if p is None else f"{p * 100:.1f}%"


def _result_json(result: Any, current: float) -> dict[str, Any]:
    out = result.model_dump(mode="json", exclude={"lines"})
    out["current"] = current
    out["items"] = [{
        "label_id": ln.evidence.label_id, "article_id": ln.evidence.article_id,
        "story": ln.evidence.story, "title": ln.evidence.title, "url": ln.evidence.url,
        "published": ln.evidence.published, "approved_at": ln.evidence.approved_at,
        "approved_by": ln.evidence.approved_by, "review_state": ln.evidence.review_state,
        "evidence_type": ln.evidence.evidence_type.value,
        "direction": ln.evidence.direction.value, "strength": ln.evidence.strength.value,
        "trigger": ln.evidence.trigger, "lr": ln.lr, "log_lr": ln.log_lr, "counted": ln.counted,
        "contribution": ln.contribution, "note": ln.note} for ln in result.lines]
    return out


@main.group(cls=_DefaultShow)
def ledger() -> None:
    """Stage 7: approved evidence → a suggested probability per thesis; editors apply it.

    `evidence ledger THESIS` is short for `evidence ledger show THESIS`.

    \b
    Examples:
      evidence ledger oss-parity
      evidence ledger oss-parity --json
      evidence ledger apply oss-parity --suggested --user ana --note "eval confirmed parity"
      evidence ledger history oss-parity
    """


@ledger.command("show")
@env_options(listing=True)
@click.argument("thesis_id", required=False, metavar="[THESIS]")
def show(env: Env, thesis_id: str | None) -> None:
    """The ledger of THESIS (or a summary of every thesis): prior, items, suggestion, triggers.

    Each item shows its date, title, evidence type, direction, strength, likelihood ratio,
    log-odds contribution and story; copies of one story and capped circumstantial items say so.
    Nothing here changes a probability.
    """
    from classifier import ledger as stage

    theses = [env.theses.get(thesis_id)] if thesis_id else env.theses.thesis
    with env.engine.connect() as conn:
        results = [(t, stage.ledger_for(conn, t, env.theses), stage.current_probability(conn, t))
                   for t in theses]
    if env.as_json:
        rows = [_result_json(r, cur) for _, r, cur in results]
        env.emit(rows[0] if thesis_id else rows)
        return
    out = Console(highlight=False)
    if not thesis_id:
        table = Table("thesis", "current", "suggested", "items", "counted", "nearest trigger")
        for t, r, cur in results:
            near = min((d for d in r.triggers if not d.reached), key=lambda d: d.log_odds,
                       default=None)
            table.add_row(t.id, _pct(cur), _pct(r.suggested), str(len(r.lines)),
                          str(sum(ln.counted for ln in r.lines)),
                          f"{near.trigger_id}: about {near.direct_strong_items:.1f} direct-strong"
                          if near else "—")
        out.print(table)
        return
    t, r, cur = results[0]
    source = (f"applied {r.prior_at:%Y-%m-%d %H:%M} UTC" if r.prior_at
              else "stated in theses.toml")
    out.print(f"[bold]{t.id}[/bold]  {t.title}")
    out.print(f"prior {_pct(r.prior)} ({source})   current {_pct(cur)}   "
              f"suggested [bold]{_pct(r.suggested)}[/bold]   (log-odds {r.log_odds_change:+.3f})",
              soft_wrap=True)
    if r.lines:
        out.print("log-odds  LR     type/direction/strength            date        story  title")
        for ln in r.lines:
            e = ln.evidence
            when = e.published or e.approved_at
            kind = f"{e.evidence_type.value}/{e.direction.value}/{e.strength.value}"
            contribution = f"{ln.contribution:+.3f}" if ln.counted else "     0"
            out.print(f"{contribution:>8}  {ln.lr:<5.3g}  {kind:<33}  {when:%Y-%m-%d}  "
                      f"{e.story:<5}  {e.title}" + (f"  [dim]({ln.note})[/dim]" if ln.note else ""),
                      soft_wrap=True)
    else:
        out.print("no approved evidence since the prior")
    for d in r.triggers:
        arrow = "above" if d.direction == "up" else "below"
        if d.reached:
            out.print(f"trigger {d.trigger_id} ({arrow} {_pct(d.to)}): [bold]reached[/bold] by "
                      "the suggestion (a person decides whether the condition holds)",
                      soft_wrap=True)
        else:
            out.print(f"trigger {d.trigger_id} ({arrow} {_pct(d.to)}): {d.log_odds:.2f} log-odds "
                      f"away, about {d.direct_strong_items:.1f} direct-strong items",
                      soft_wrap=True)


@ledger.command("apply")
@env_options()
@click.argument("thesis_id", metavar="THESIS")
@click.option("--to", "to", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The probability to record (0 < P < 1).")
@click.option("--suggested", is_flag=True, help="Record the ledger's current suggestion.")
@click.option("--note", required=True, help="Why (stored with the change).")
@click.option("--user", "user_name", envvar="EVIDENCE_USER", required=True,
              help="Review-desk editor or admin applying it (env EVIDENCE_USER).")
def apply(env: Env, thesis_id: str, to: float | None, suggested: bool, note: str,
          user_name: str) -> None:
    """Record a new probability for THESIS: who, when, from, to, why.

    The ledger then starts again from this value; evidence already approved is absorbed in it.
    """
    from classifier import ledger as stage
    from classifier.store import write

    if (to is None) == (not suggested):
        raise click.UsageError("give exactly one of --to P or --suggested")
    thesis = env.theses.get(thesis_id)
    with write(env.engine) as conn:
        value = round(stage.ledger_for(conn, thesis, env.theses).suggested, 4) if suggested else to
        h = stage.apply_probability(conn, thesis, to=float(value or 0), user_name=user_name,
                                    note=note,
                                    theses_file=env.theses)
    if not env.quiet:
        click.echo(f"{thesis.id}: {_pct(h.from_probability)} → {_pct(h.to_probability)} "
                   f"(suggested {_pct(h.suggested_probability)}) by {h.user_name}: {h.note}")


@ledger.command("history")
@env_options(listing=True)
@click.argument("thesis_id", metavar="THESIS")
def history(env: Env, thesis_id: str) -> None:
    """Every probability applied to THESIS, oldest first."""
    from classifier import ledger as stage

    thesis = env.theses.get(thesis_id)
    with env.engine.connect() as conn:
        rows = stage.load_history(conn, thesis.id)
    if env.as_json:
        env.emit([h.model_dump(mode="json") for h in rows])
        return
    if not rows:
        click.echo(f"{thesis.id}: no probability applied yet; stated {_pct(thesis.probability)}")
        return
    table = Table("when (UTC)", "from", "to", "suggested", "who", "why")
    for h in rows:
        table.add_row(f"{h.created_at:%Y-%m-%d %H:%M}", _pct(h.from_probability),
                      _pct(h.to_probability), _pct(h.suggested_probability), h.user_name, h.note)
    Console(highlight=False).print(table)


@main.group()
def alerts() -> None:
    """Trigger alerts: signed webhooks from `[[alert]]` in feeds.toml.

    \b
    Examples:
      evidence alerts test
      evidence alerts deliver
      evidence alerts log --json
    """


@alerts.command("test")
@env_options(listing=True)
@click.option("--url", default=None, help="Only the receiver with this URL.")
def alerts_test(env: Env, url: str | None) -> None:
    """Send a signed `test` event to each configured receiver now; exit 1 if any failed."""
    from classifier import alerts as stage

    hooks = [a for a in env.feeds.alert if url is None or a.url == url]
    if not hooks:
        raise ConfigError("no [[alert]] receivers configured" + (f" with url {url}" if url else ""),
                          path=env.feeds_path)
    results = stage.send_test(env.engine, hooks)
    if env.as_json:
        env.emit(results)
    else:
        for r in results:
            status = "ok" if r["ok"] else "FAILED"
            click.echo(f"{status:6} {r['url']}  {r['status'] or '-'}  {r['latency_ms']} ms  "
                       f"{r['error'] or ''}".rstrip())
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


@alerts.command("deliver")
@env_options(listing=True)
@click.option("--every", "every_s", type=click.FloatRange(0.5), default=None, metavar="SECONDS",
              help="Keep running: a delivery pass every SECONDS until Ctrl-C/SIGTERM.")
def alerts_deliver(env: Env, every_s: float | None) -> None:
    """Send due trigger events (and due retries); once, or every N seconds with --every.

    Safe next to workers and other deliverers: each event is claimed before it is sent.
    """
    import signal
    import threading

    from classifier import alerts as stage

    if not env.feeds.alert:
        raise ConfigError("no [[alert]] receivers configured", path=env.feeds_path)
    if every_s is not None:
        loop = stage.DeliveryLoop(env.engine, env.feeds.alert, every_s=every_s).start()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        loop.stop()
        return
    counts = stage.deliver_pending(env.engine, env.feeds.alert)
    if env.as_json:
        env.emit(counts.model_dump())
    elif not env.quiet:
        click.echo(", ".join(f"{k} {v}" for k, v in counts.model_dump().items()))


@alerts.command("log")
@env_options(listing=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def alerts_log(env: Env, limit: int) -> None:
    """The latest delivery attempts, newest first (every attempt is recorded)."""
    from classifier import alerts as stage

    with env.engine.connect() as conn:
        rows = stage.recent_deliveries(conn, limit)
    if env.as_json:
        env.emit(rows)
        return
    table = Table("when (UTC)", "event", "type", "url", "try", "result", "next try")
    for r in rows:
        result = "ok" if r["ok"] else (r["error"] or "failed")[:60]
        table.add_row(f"{r['at']:%Y-%m-%d %H:%M:%S}", r["msg_id"][:16], r["type"], r["url"],
                      str(r["attempt"]), result,
                      f"{r['next_attempt_at']:%H:%M:%S}" if r["next_attempt_at"] else "—")
    Console(highlight=False).print(table)
