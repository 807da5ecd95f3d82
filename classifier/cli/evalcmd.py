"""`evidence eval run|compare|gate` and `evidence gold export`: the eval harness's verbs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from classifier.cli import main
from classifier.cli.common import Env, env_options
from classifier.errors import ConfigError

DEFAULT_GOLD = "eval/gold/seed.jsonl"
DEFAULT_BASELINE = "eval/baseline.json"


@main.group("eval")
def eval_group() -> None:
    """Score the labeler on gold data, compare runs, and gate CI on a baseline."""


def _items(env: Env, gold: tuple[str, ...], dataset: str | None, sample: int | None, seed: int,
           corpora: str | None, split: str = "all",
           only: tuple[str, ...] = ()) -> tuple[list[Any], dict[str, Any]]:
    from classifier.evaluation import adapters
    from classifier.evaluation.gold import file_sha256, load_gold
    items: list[Any] = []
    desc: dict[str, Any] = {}
    if gold:
        items += load_gold(list(gold), env.theses)
        desc["files"] = list(gold)
        desc["sha256"] = file_sha256(gold)
    if dataset:
        items += adapters.load_dataset(dataset, sample=sample, seed=seed, corpora=corpora,
                                       split=split)
        desc["dataset"] = {"name": dataset, "sample": sample, "seed": seed, "split": split,
                           "mapping": adapters.mapping(dataset)}
    if only:
        unknown = sorted(set(only) - {it.thesis.id for it in items})
        if unknown:
            raise ConfigError(f"--thesis {', '.join(unknown)}: no item of the gold set is about it")
        items = [it for it in items if it.thesis.id in set(only)]
        desc["theses"] = sorted(only)
    if not items:
        raise ConfigError("nothing to evaluate: give --gold FILE and/or --dataset NAME")
    return items, desc


def _run(env: Env, items: list[Any], desc: dict[str, Any], model: str | None, out: str | None,
         limit: int | None, resamples: int, llm: str | None = None) -> tuple[Path, dict[str, Any]]:
    from classifier.backends import get_backend
    from classifier.evaluation.report import write_report
    from classifier.evaluation.runner import default_run_dir, run_eval
    from classifier.label import model_id
    settings = env.settings.label
    backend = get_backend(model, settings, llm=llm)
    run_dir = Path(out) if out else default_run_dir(model_id(backend))
    env.console.print(f"[bold]{len(items)}[/] items, model {model_id(backend)} → {run_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[item]}"))
    with Progress(*columns, console=env.console, disable=env.quiet) as bar:
        task = bar.add_task("labeling", total=len(items), item="")

        def progress(done: int, total: int, item_id: str) -> None:
            bar.update(task, completed=done, item=item_id)

        record = run_eval(items, backend, run_dir, gold=desc, settings=settings,
                          progress=progress, n_resamples=resamples, limit=limit)
    write_report(run_dir, record)
    return run_dir, record


def _print_figures(env: Env, record: dict[str, Any]) -> None:
    from classifier.evaluation.report import fmt, fmt_ci
    m = record["metrics"]
    click.echo(f"{'figure':<26}{'value':>8}  {'95% CI':<18}{'n':>5}")
    for name, f in m["figures"].items():
        click.echo(f"{name:<26}{fmt(f['value']):>8}  {fmt_ci(f):<18}{f['n']:>5}")
    if m.get("fnc"):
        click.echo(f"official FNC-1 score: {m['fnc']['score']:.2f} / {m['fnc']['max']:.2f}")
    c = m["cost"]
    click.echo(f"latency ms p50 {fmt(c['latency_ms']['p50'], 0)} p95 {fmt(c['latency_ms']['p95'], 0)}; "
               f"tokens p50 {fmt(c['tokens']['p50'], 0)} p95 {fmt(c['tokens']['p95'], 0)}; "
               f"cost total ${c['cost_usd']['total']:.4f}; wall {record['wall_s']:.1f} s; "
               f"{m['n_failed']} of {m['n_items']} failed")
    if m.get("failures"):
        click.echo("failures: " + ", ".join(f"{k} {v}" for k, v in m["failures"].items()))


@eval_group.command("run")
@env_options()
@click.option("--gold", "gold", multiple=True, metavar="FILE",
              help="Gold JSONL file (repeat for several).")
@click.option("--dataset", type=click.Choice(["fnc1", "arc", "climate-fever", "perspectrum",
                                              "covid-fact"]),
              help="External labeled set, read from the corpora folder.")
@click.option("--split", type=click.Choice(["all", "train", "heldout"]), default="all",
              show_default=True, help="Dataset part: heldout = the fifth of bodies (FNC-1, ARC) or "
              "claims the encoder never trains on.")
@click.option("--sample", type=int, metavar="N", help="Stratified sample of N dataset items.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--corpora", metavar="DIR", help="Corpora folder (default ../shared/corpora; "
              "env EVIDENCE_CORPORA).")
@click.option("--thesis", "only", multiple=True, metavar="ID",
              help="Only the items about this thesis (repeat for several).")
@click.option("--model", metavar="M", help="Labeler: combined (default), local, local:/path.gguf, "
              "openai:<model>, encoder, encoder:/model/dir.")
@click.option("--llm", metavar="M", help="The combined labeler's LLM (default: env EVIDENCE_MODEL, "
              "else local).")
@click.option("--out", metavar="DIR", help="Run folder (default eval/runs/<time>-<model>); "
              "an interrupted run resumes into it.")
@click.option("--limit", type=int, metavar="N", help="Label at most N new items, then stop.")
@click.option("--resamples", type=int, default=1000, show_default=True,
              help="Bootstrap resamples for the intervals.")
def eval_run(env: Env, gold: tuple[str, ...], dataset: str | None, split: str,
             sample: int | None, seed: int, corpora: str | None, only: tuple[str, ...],
             model: str | None, llm: str | None, out: str | None, limit: int | None,
             resamples: int) -> None:
    """Label gold items with a model; write the run record and report.md/report.html."""
    items, desc = _items(env, gold, dataset, sample, seed, corpora, split, only)
    run_dir, record = _run(env, items, desc, model, out, limit, resamples, llm)
    if not env.quiet:
        _print_figures(env, record)
    click.echo(f"run: {run_dir}  report: {run_dir / 'report.md'}  status: {record['status']}")


@eval_group.command("compare")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@click.option("--changed", type=int, default=20, show_default=True,
              help="How many changed items to list.")
@click.option("--resamples", type=int, default=1000, show_default=True)
def eval_compare(run_a: str, run_b: str, as_json: bool, changed: int, resamples: int) -> None:
    """Compare two runs: per-figure deltas (B − A) with 95% intervals, exact McNemar tests, and
    the items whose label changed, worst first."""
    from classifier.evaluation.compare import compare_runs
    from classifier.evaluation.report import fmt
    c = compare_runs(run_a, run_b, n_resamples=resamples)
    if as_json:
        click.echo(json.dumps(c, indent=2, ensure_ascii=False))
        return
    click.echo(f"A: {c['a']['dir']} ({c['a']['model']}, prompt {c['a']['prompt_hash'][:12]})")
    click.echo(f"B: {c['b']['dir']} ({c['b']['model']}, prompt {c['b']['prompt_hash'][:12]})")
    click.echo(f"{c['n_paired']} paired items ({c['n_only_a']} only in A, {c['n_only_b']} only in B)\n")
    click.echo(f"{'figure':<26}{'A':>8}{'B':>8}{'B−A':>8}  95% CI of B−A")
    for name, f in c["figures"].items():
        ci = "n/a" if not f["ci"] else f"[{fmt(f['ci'][0])}, {fmt(f['ci'][1])}]"
        mark = " (lower is better)" if f["lower_is_better"] else ""
        click.echo(f"{name:<26}{fmt(f['a']):>8}{fmt(f['b']):>8}{fmt(f['delta']):>8}  {ci}{mark}")
    click.echo("\nexact McNemar (paired items):")
    for name, t in c["mcnemar"].items():
        click.echo(f"  {name:<16} A right/B wrong {t['a_right_b_wrong']:>3}, A wrong/B right "
                   f"{t['a_wrong_b_right']:>3}, p = {t['p_value']:.4f}")
    click.echo(f"\n{len(c['changed'])} items changed label (worst first):")
    for item in c["changed"][:changed]:
        click.echo(f"  {item['change']:+d} {item['id']} [{item['thesis']}] gold {_short(item['gold'])}"
                   f"\n      A {_short(item['a'])}\n      B {_short(item['b'])}")


def _short(label: dict[str, Any]) -> str:
    if "failed" in label:
        return f"FAILED ({label['failed']})"
    if not label.get("relevant"):
        return "not relevant"
    parts = [label.get("evidence_type"), label.get("direction"), label.get("strength")]
    trig = f" trigger={label['trigger']}" if label.get("trigger") else ""
    return "/".join(str(p) for p in parts if p) + trig


@eval_group.command("gate")
@env_options()
@click.option("--update", is_flag=True, help="Measure and rewrite the baseline's bounds.")
@click.option("--allow-regression", is_flag=True, help="With --update: allow loosening a bound.")
@click.option("--model", default="combined", show_default=True, metavar="M",
              help="Labeler spec (the default labeler: the shipped encoder + the embedded LLM).")
@click.option("--gold", "gold", multiple=True, metavar="FILE",
              help=f"Gold file(s) (default {DEFAULT_GOLD}).")
@click.option("--baseline", default=DEFAULT_BASELINE, show_default=True, metavar="PATH")
@click.option("--out", metavar="DIR", help="Run folder (default eval/runs/<time>-<model>).")
@click.option("--allow-partial", is_flag=True,
              help="With --update and --out of an interrupted run: label nothing more and write "
                   "bounds from the items it finished, widened to their 95% intervals.")
@click.option("--resamples", type=int, default=1000, show_default=True)
def eval_gate(env: Env, update: bool, allow_regression: bool, model: str, gold: tuple[str, ...],
              baseline: str, out: str | None, allow_partial: bool, resamples: int) -> None:
    """Score the seed gold with the default labeler; exit 1 if a bound in eval/baseline.json is
    missed or the gold changed. --update rewrites the bounds (never loosening one without
    --allow-regression)."""
    from classifier.evaluation import gate
    from classifier.evaluation.gold import file_sha256
    gold = gold or (DEFAULT_GOLD,)
    sha = file_sha256(gold)
    old = gate.load_baseline(baseline)
    problems = gate.gold_check(old, sha)
    if problems and not update:  # no model run: the bounds do not apply to these items
        for p in problems:
            click.echo(f"GATE FAILED: {p}", err=True)
        sys.exit(1)
    if allow_partial and not (update and out):
        raise ConfigError("--allow-partial needs --update and --out (an interrupted run folder)")
    items, desc = _items(env, gold, None, None, 0, None)
    run_dir, record = _run(env, items, desc, model, out, 0 if allow_partial else None, resamples)
    figures = record["metrics"]["figures"]
    if not record["metrics"]["n_items"]:
        raise ConfigError("the run folder has no labeled items to measure", path=str(run_dir))
    if not env.quiet:
        _print_figures(env, record)
    if record["status"] != "done" and not allow_partial:
        click.echo(f"GATE FAILED: the run is {record['status']} ({run_dir}); resume with --out",
                   err=True)
        sys.exit(1)
    if update:
        res = gate.update(figures, old, gold_files=list(gold), gold_sha256=sha,
                          run_config=record["config"], run_dir=str(run_dir), model_spec=model,
                          allow_regression=allow_regression,
                          measured_items=record["metrics"]["n_items"], gold_items=len(items))
        if not res.passed:
            for p in res.problems:
                click.echo(f"UPDATE REFUSED: {p}", err=True)
            sys.exit(1)
        assert res.baseline is not None
        gate.write_baseline(baseline, res.baseline)
        click.echo(f"baseline written: {baseline} ({len(res.baseline['floors'])} floors, "
                   f"{len(res.baseline['ceilings'])} ceilings)")
        return
    assert old is not None
    res = gate.check(figures, old)
    for c in res.checks:
        kind = "floor" if "floor" in c else "ceiling"
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        click.echo(f"  {'ok  ' if c['ok'] else 'MISS'} {c['figure']:<26}{value:>8}  {kind} {c[kind]:.3f}")
    if not res.passed:
        for p in res.problems:
            click.echo(f"GATE FAILED: {p}", err=True)
        sys.exit(1)
    click.echo(f"gate passed ({len(res.checks)} bounds; run {run_dir})")


@main.group("gold")
def gold_group() -> None:
    """Gold data from editors' decisions."""


@gold_group.command("export")
@env_options()
@click.option("--since", metavar="DATE", help="Only labels decided at or after this ISO date/time.")
@click.option("--thesis", metavar="ID", help="Only this thesis.")
@click.option("--out", metavar="FILE", help="Write JSONL here (default: stdout).")
def gold_export(env: Env, since: str | None, thesis: str | None, out: str | None) -> None:
    """Approved and corrected labels (rejected ones as not relevant) → gold JSONL tagged
    source = "review", with the article text; `evidence eval run --gold` reads it."""
    from classifier.evaluation.export import export_gold
    from classifier.evaluation.runner import parse_time
    items = export_gold(env.engine, since=parse_time(since) if since else None, thesis_id=thesis)
    lines = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)
    if out:
        Path(out).write_text(lines, encoding="utf-8")
        env.console.print(f"{len(items)} gold items → {out}")
    else:
        click.echo(lines, nl=False)
