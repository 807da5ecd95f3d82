"""Stage 6 verbs: serve (the review desk), user add/list/disable, export."""

from __future__ import annotations

import csv
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy import Engine

from classifier import queue, review_export, users
from classifier.cli import main
from classifier.cli.common import Env, env_options
from classifier.config import ThesesFile


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@env_options()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes the desk to the network.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option("--secure-cookies", is_flag=True,
              help="Mark cookies Secure (set this when a TLS proxy serves the desk).")
def serve(env: Env, host: str, port: int, secure_cookies: bool) -> None:
    """Serve the review desk (web UI and JSON API) on 127.0.0.1:8000.

    Example: evidence serve --port 8080   then open http://127.0.0.1:8080/
    """
    theses = env.theses if Path(env.theses_path).exists() else ThesesFile()
    if not Path(env.theses_path).exists():
        env.console.print(f"[yellow]warning:[/] {env.theses_path} not found; "
                          "thesis pages show ids only")
    run_desk(env.engine, theses, host=host, port=port, secure_cookies=secure_cookies,
             alerts=env.feeds.alert, console=env.console, quiet=env.quiet)


def run_desk(engine: Engine, theses: ThesesFile, *, host: str, port: int,
             secure_cookies: bool = False, alerts: Sequence[Any] = (),
             console: Console, quiet: bool = False) -> None:
    """Engine, theses → the review desk on host:port until Ctrl-C (`serve`, `demo --serve`)."""
    import uvicorn

    from classifier.web import create_app
    from classifier.web.app import WebSettings

    if not _is_loopback(host):
        click.secho("=" * 72, fg="red", err=True)
        click.secho(f"WARNING: binding {host}:{port}: the review desk is reachable from the "
                    "network.",
                    fg="red", bold=True, err=True)
        click.secho("Put it behind TLS (a reverse proxy) and use --secure-cookies.",
                    fg="red", err=True)
        click.secho("=" * 72, fg="red", err=True)
    if not users.list_users(engine):
        console.print("[yellow]No users yet:[/] add one with "
                      "`evidence user add NAME --role admin`.")
    app = create_app(engine, theses, settings=WebSettings(secure_cookies=secure_cookies))
    console.print(f"Review desk on http://{host}:{port}/  (Ctrl-C stops)")
    from classifier.alerts import DeliveryLoop  # trigger alerts from decisions, within seconds
    alerts_loop = DeliveryLoop(engine, list(alerts)).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info",
                    proxy_headers=False, server_header=False)
    finally:
        alerts_loop.stop()


@main.group()
def user() -> None:
    """Manage editors and admins (no default account; no sign-up)."""


@user.command("add")
@env_options()
@click.argument("name")
@click.option("--role", type=click.Choice(users.ROLES), default="editor", show_default=True)
@click.option("--generate", is_flag=True, help="Generate a password and show it once.")
def user_add(env: Env, name: str, role: str, generate: bool) -> None:
    """Add a user; the password comes from a prompt (or --generate shows a new one once).

    Example: evidence user add ann --role editor
    """
    if generate:
        password = users.generate_password()
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    made = users.add_user(env.engine, name, password, role=role)  # type: ignore[arg-type]
    click.echo(f"Added {made.role} {made.name}.")
    if generate:
        click.echo(f"Password (shown only now): {password}")


@user.command("list")
@env_options(listing=True)
def user_list(env: Env) -> None:
    """List users (name, role, state)."""
    rows = users.list_users(env.engine)
    if env.as_json:
        env.emit(rows)
        return
    for r in rows:
        click.echo(f"{r['name']}\t{r['role']}\t{'disabled' if r['disabled'] else 'active'}")


@user.command("disable")
@env_options()
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the user again instead.")
def user_disable(env: Env, name: str, enable: bool) -> None:
    """Disable a user (ends their sessions), or --enable them again."""
    users.set_disabled(env.engine, name, not enable)
    click.echo(f"{'Enabled' if enable else 'Disabled'} {name}.")


CSV_FIELDS = ["id", "thesis", "review_state", "relevant", "evidence_type", "direction", "strength",
              "trigger", "title", "source", "url", "published", "decided_by", "decided_at", "note",
              "proposed_relevant", "proposed_evidence_type", "proposed_direction",
              "proposed_strength", "proposed_trigger", "confidence", "model"]


@main.command()
@env_options()
@click.option("--state", "states", multiple=True, default=["approved"], show_default=True,
              type=click.Choice(queue.STATES), help="Review state(s) to export; repeat for more.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="Output file ('-' is stdout).")
def export(env: Env, states: tuple[str, ...], fmt: str, out: str) -> None:
    """Export reviewed labels as JSON Lines (gold format) or CSV.

    Example: evidence export --state approved --state corrected --format jsonl --out reviewed.jsonl
    """
    with env.engine.connect() as conn:
        rows = review_export.export(conn, tuple(states))
    stream = sys.stdout if out == "-" else open(out, "w", newline="", encoding="utf-8")
    try:
        if fmt == "jsonl":
            for r in rows:
                stream.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            w = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in rows:
                label, prop = r["label"] or {}, r["proposed"]
                w.writerow({"id": r["id"], "thesis": r["thesis"], "review_state": r["review_state"],
                            **{k: label.get(k) for k in queue.JUDGED},
                            "title": r["article"]["title"], "source": r["article"]["source"],
                            "url": r["article"]["url"], "published": r["article"]["published"],
                            "decided_by": r["decided_by"], "decided_at": r["decided_at"],
                            "note": r["note"],
                            **{f"proposed_{k}": prop[k] for k in queue.JUDGED},
                            "confidence": prop["confidence"], "model": prop["model"]})
    finally:
        if stream is not sys.stdout:
            stream.close()
    if out != "-":
        env.console.print(f"{len(rows)} label(s) written to {out}")
    if not rows and not env.quiet:
        env.console.print(f"no labels in state {', '.join(states)}")
