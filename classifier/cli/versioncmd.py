"""`evidence model combine | list | use` and the --from-decisions half of `evidence model train`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from classifier.cli.common import Env, env_options
from classifier.cli.labelcmd import model_group


def _rescore(env: Env) -> dict[str, int]:
    """Re-score pending labels with the now active encoder (the LLM is not asked again)."""
    from classifier.backends.combined import CombinedBackend
    from classifier.combine.rescore import rescore_pending
    from classifier.encoder import versions
    backend = CombinedBackend(None, settings=env.settings.label,
                              encoder=versions.active_folder(env.engine))
    return rescore_pending(env.engine, env.theses, backend)


def train_from_decisions(env: Env, *, out: str | None, since: Any, gate_gold: tuple[str, ...],
                         gate_theses: str | None, epochs: int, lr: float, seed: int,
                         replay: tuple[str, ...],
                         replay_theses: str, max_steps: int | None) -> None:
    """`evidence model train --from-decisions`: learn, gate, promote (and re-score) or refuse."""
    from datetime import UTC

    from classifier.config import load_theses
    from classifier.encoder.learn import LearnOptions, learn
    gold_theses = load_theses(gate_theses) if gate_theses else env.theses
    opts = LearnOptions(
        out=Path(out) if out else None, since=since.replace(tzinfo=UTC) if since else None,
        epochs=epochs, lr=lr, seed=seed, replay=replay,
        replay_theses=replay_theses if Path(replay_theses).exists() else None,
        gate_gold=gate_gold, gate_theses=gold_theses if gate_gold else None, max_steps=max_steps,
        command="evidence model train " + shlex.join(sys.argv[3:]))
    columns = (TextColumn("learning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("loss {task.fields[loss]}"))
    with Progress(*columns, console=env.console, disable=env.quiet) as bar:
        task = bar.add_task("learn", total=None, loss="-")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        res = learn(env.engine, env.theses, opts, progress=progress, say=env.console.print)
    if res["promoted"]:
        res["rescored"] = _rescore(env)
        click.echo(f"promoted {res['version']} (parent {res['parent']}; {res['decisions']} "
                   f"decisions, {res['held_back']} held back); re-scored "
                   f"{res['rescored']['rescored']} pending labels; folder {res['folder']}")
    else:
        problems = [p for s in res["gate"]["sets"].values() for p in s["problems"]]
        problems += res["gate"].get("problems", [])
        click.echo(f"refused {res['version']}: the gate found a regression "
                   f"({'; '.join(problems)}); kept in {res['folder']}, the active version is "
                   f"unchanged ({res['parent']})")
        sys.exit(1)


@model_group.command("combine")
@click.option("--run", "runs", multiple=True, required=True, metavar="DIR",
              help="An `evidence eval run` folder of the LLM over the --gold items (repeat).")
@click.option("--gold", "gold", multiple=True, required=True, metavar="FILE",
              help="The gold file(s) those runs labeled (theses from --theses).")
@click.option("--encoder", metavar="DIR", help="Encoder model folder (default: the shipped one); "
              "the combiner is written into it.")
@env_options()
def model_combine(env: Env, runs: tuple[str, ...], gold: tuple[str, ...],
                  encoder: str | None) -> None:
    """Fit the combiner (logistic stacking per field) from LLM runs on gold the encoder never
    trained on; write combiner.json beside the encoder with leave-one-thesis-out figures.

        evidence model combine --theses eval/train/theses.toml --gold eval/train/items.jsonl \\
            --run eval/runs/train-calibration-local
    """
    from classifier.backends.encoder import EncoderBackend
    from classifier.combine.fit import fit_and_save, refuse_trained, samples_from_run
    from classifier.evaluation.gold import file_sha256, load_gold
    enc = EncoderBackend(encoder)
    items = load_gold(list(gold), env.theses)
    from classifier.evaluation.runner import load_results
    samples = []
    for run in runs:
        ids = {r.id for r in load_results(run)}
        chosen = [it for it in items if it.id in ids]
        refuse_trained(chosen, enc.loaded.card)
        samples += samples_from_run(chosen, run, enc)
    sources = [{"run": r} for r in runs] + [{"gold": list(gold), "sha256": file_sha256(gold),
                                             "theses_file": env.theses_path}]
    comb = fit_and_save(samples, enc.folder, enc.model, sources=sources,
                        command="evidence model combine " + shlex.join(sys.argv[3:]))
    cv = comb.card["cross_validation"]
    click.echo(f"combiner {comb.version} for encoder {enc.model}: {len(samples)} samples over "
               f"{cv['folds']} theses → {enc.folder / 'combiner.json'}")
    click.echo(f"leave-one-thesis-out   {'combined':>9} {'encoder':>9} {'llm':>9}")
    for k in cv["combined"]:
        vals = [cv[s][k] for s in ("combined", "encoder", "llm")]
        click.echo(f"{k:<22} " + " ".join(f"{'-' if v is None else f'{v:.3f}':>9}" for v in vals))


@model_group.command("list")
@env_options(listing=True)
def model_list(env: Env) -> None:
    """List the desk's encoder versions: parent, decisions, gate, status; * marks the active one.

        evidence model list
    """
    from classifier.encoder import versions
    rows = versions.list_versions(env.engine)
    shipped = versions.shipped_version()
    active = next((r["version"] for r in rows if r["active"]), shipped)
    if env.as_json:
        env.emit({"active": active, "shipped": shipped, "versions": rows})
        return
    t = Table("", "version", "parent", "made", "decisions", "gate", "status", "folder")
    t.add_row("*" if active == shipped else "", shipped, "", "", "", "", "shipped", "(package)")
    for r in rows:
        gate = r["gate"] or {}
        sets = gate.get("sets", {})
        figure = ", ".join(f"{k} dir {v['candidate'].get('direction.macro_f1') or 0:.2f}"
                           for k, v in sets.items())
        t.add_row("*" if r["active"] else "", r["version"], r["parent"] or "",
                  f"{r['created_at']:%Y-%m-%d %H:%M}", str(r["decisions"]),
                  ("passed" if gate.get("passed") else "failed")
                  + (f" ({figure})" if figure else ""),
                  r["status"], r["path"])
    Console(highlight=False).print(t)


@model_group.command("use")
@click.argument("version")
@env_options()
def model_use(env: Env, version: str) -> None:
    """Make VERSION (or `shipped`) the encoder that labels, and re-score pending labels with it.

        evidence model use shipped
    """
    from classifier.encoder import versions
    row = versions.use(env.engine, version)
    counts = _rescore(env)
    name = row["version"] if row else f"shipped ({versions.shipped_version()})"
    click.echo(f"active encoder: {name}; re-scored {counts['rescored']} pending labels"
               + (f"; {counts['thesis_changed']} left (their thesis changed)"
                  if counts["thesis_changed"] else ""))
