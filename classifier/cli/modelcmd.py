"""`evidence model train` and `evidence model card`: the evidence encoder's verbs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from classifier.cli.common import Env, env_options
from classifier.cli.labelcmd import model_group

TRAIN_DATA = "eval/train/items.jsonl"
TRAIN_THESES = "eval/train/theses.toml"
TRAIN_COUNTERS = "eval/train/counter.toml"
CORPORA = ("fnc1", "arc", "perspectrum", "climate-fever", "covid-fact")


@model_group.command("train")
@click.option("--data", multiple=True, metavar="FILE", default=[TRAIN_DATA], show_default=True,
              help="Gold-format training file (repeat for several).")
@click.option("--data-theses", default=TRAIN_THESES, show_default=True, metavar="PATH",
              help="Theses file of the training items.")
@click.option("--counter-theses", "counters", default=TRAIN_COUNTERS, show_default=True,
              metavar="PATH", help="Counter-theses: each training item is also judged against "
              "its thesis's complement, supports and undermines swapped ('' for none).")
@click.option("--corpus", "corpora", multiple=True, type=click.Choice(CORPORA),
              help="Open corpus to add (train split, class-balanced; repeat). Default: all.")
@click.option("--no-corpora", is_flag=True, help="Train on the written data only.")
@click.option("--corpus-scale", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Multiply the per-class count drawn from each corpus.")
@click.option("--corpora", "corpora_dir", metavar="DIR",
              help="Corpora folder (default ../shared/corpora; env EVIDENCE_CORPORA).")
@click.option("--out", metavar="DIR", help="Model folder to write (resumes into it); with "
              "--from-decisions default $EVIDENCE_MODELS_DIR/<time>.")
@click.option("--from-decisions", is_flag=True, help="Fine-tune the active encoder on the desk's "
              "approved, corrected and rejected labels, refit the combiner, and promote the new "
              "version only if the gate on held-back decisions (and --gate-gold) does not regress.")
@click.option("--since", type=click.DateTime(), metavar="DATE",
              help="With --from-decisions: only decisions made on or after DATE (UTC).")
@click.option("--gate-gold", multiple=True, metavar="FILE",
              help="With --from-decisions: gold file the gate also scores.")
@click.option("--gate-theses", metavar="PATH",
              help="With --from-decisions: the theses of --gate-gold (default: --theses).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Passes over the data [default: 4; 2 with --from-decisions].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the split, the corpus draw, the batch order and dropout.")
@click.option("--max-length", type=click.IntRange(32, 512), default=256, show_default=True,
              help="Tokens per pair (thesis + title + chosen passages).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Learning rate of the body [default: 1e-4; 5e-5 with --from-decisions].")
@click.option("--calibration-theses", type=click.IntRange(min=0), default=6, show_default=True,
              help="Theses kept out of training to fit calibration on.")
@click.option("--heldout-theses", type=click.IntRange(min=0), default=8, show_default=True,
              help="Theses kept out of training and calibration, scored in the card "
                   "(leave-theses-out).")
@click.option("--eval-gold", multiple=True, metavar="FILE",
              help="Gold file (theses from --theses) scored in the card; must share nothing "
                   "with the training data.")
@click.option("--eval-fnc", type=click.IntRange(min=0), default=0, metavar="N",
              help="Score N held-out-body FNC-1 pairs (stratified) in the card.")
@click.option("--max-steps", type=click.IntRange(min=1), hidden=True,
              help="Stop after N optimizer steps (smoke runs and tests).")
@env_options()
def model_train(env: Env, data: tuple[str, ...], data_theses: str, counters: str,
                corpora: tuple[str, ...],
                no_corpora: bool, corpus_scale: float, corpora_dir: str | None, out: str | None,
                from_decisions: bool, since: Any, gate_gold: tuple[str, ...],
                gate_theses: str | None,
                epochs: int | None, seed: int, max_length: int, batch_size: int,
                lr: float | None, calibration_theses: int, heldout_theses: int,
                eval_gold: tuple[str, ...], eval_fnc: int, max_steps: int | None) -> None:
    """Train the evidence encoder: a model folder with weights, calibration and a model card.

    \b
    Examples:
      evidence model train --out models/enc-v3            # from the written set + corpora
      evidence model train --from-decisions --since 2026-11-01 --gate-gold eval/gold/seed.jsonl
    """
    if from_decisions:
        from classifier.cli.versioncmd import train_from_decisions
        train_from_decisions(env, out=out, since=since, gate_gold=gate_gold,
                             gate_theses=gate_theses, epochs=epochs or 2,
                             lr=lr or 5e-5, seed=seed, replay=data, replay_theses=data_theses,
                             max_steps=max_steps)
        return
    if out is None:
        raise click.UsageError("--out DIR is required (unless --from-decisions)")
    epochs, lr = epochs or 4, lr or 1e-4
    from classifier.encoder.build import BuildOptions, build
    from classifier.encoder.train import TrainSettings
    from classifier.evaluation import adapters
    from classifier.evaluation.gold import load_gold
    if counters == TRAIN_COUNTERS and not Path(counters).exists():
        counters = ""  # the default file belongs to the repo's own training set
    settings = TrainSettings(epochs=epochs, seed=seed, max_length=max_length,
                             batch_size=batch_size, lr=lr, max_steps=max_steps)
    sets: dict[str, tuple[str, list[Any]]] = {}
    if eval_gold:
        sets["gold"] = (f"{', '.join(eval_gold)} (theses {env.theses_path})",
                        load_gold(list(eval_gold), env.theses))
    if eval_fnc:
        sets["fnc1-heldout"] = (f"FNC-1 pairs whose body is held out of training, {eval_fnc} "
                                "stratified (seed 0)", adapters.load_dataset(
                                    "fnc1", sample=eval_fnc, seed=0, corpora=corpora_dir,
                                    split="heldout"))
    opts = BuildOptions(data=list(data), data_theses=data_theses, out=Path(out), settings=settings,
                        corpora=[] if no_corpora else list(corpora or CORPORA),
                        corpora_dir=corpora_dir, corpus_scale=corpus_scale,
                        n_calibration=calibration_theses, n_heldout=heldout_theses,
                        counters=counters or None,
                        eval_sets=sets, command="evidence model train " + shlex.join(sys.argv[3:]))
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"))
    with Progress(*columns, console=env.console, disable=env.quiet) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        card = build(opts, progress=progress, say=env.console.print)
    click.echo(f"model {card['version']}: {out}  card: {Path(out) / 'README.md'}  "
               f"({card['time']['total_s']:.0f} s)")


@model_group.command("card")
@click.argument("folder", required=False)
@click.option("--json", "as_json", is_flag=True, help="Output the card as JSON.")
def model_card(folder: str | None, as_json: bool) -> None:
    """Show an encoder model's card (default: the shipped model)."""
    import json

    from classifier.encoder import SHIPPED_DIR, card
    path = Path(folder) if folder else SHIPPED_DIR
    c = card.read_card(path)
    if as_json:
        click.echo(json.dumps(c, indent=2, ensure_ascii=False))
    else:
        click.echo((path / card.CARD_MD).read_text(encoding="utf-8"))
    comb = path / "combiner.json"
    if comb.exists() and not as_json:
        body = json.loads(comb.read_text(encoding="utf-8"))
        cv = body.get("card", {}).get("cross_validation", {})
        click.echo(f"## Combiner {body['version']} (combiner.json)\n\nFitted on "
                   f"{body.get('card', {}).get('fitted_on')}; fields {body['fields']}.")
        if cv:
            click.echo(f"\nLeave-one-thesis-out over {cv['folds']} theses, {cv['n']} items "
                       "(combined / encoder / LLM):")
            for k in cv.get("combined", {}):
                vals = [cv[side].get(k) for side in ("combined", "encoder", "llm")]
                click.echo(f"- {k}: " + " / ".join("-" if v is None else f"{v:.3f}" for v in vals))
    elif not as_json:
        click.echo("No combiner fitted: in the combined labeler this encoder decides the class "
                   "fields and the LLM writes the rationale, quotes and trigger.")
