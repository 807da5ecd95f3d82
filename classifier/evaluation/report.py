"""A run record → report.md and report.html, with confusion matrices and the reliability diagram
drawn by matplotlib into img/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from classifier.evaluation.metrics import LOWER_IS_BETTER  # noqa: E402

IMG = "img"


def fmt(x: float | None, digits: int = 3) -> str:
    """Number or None → fixed-point text ("n/a" for None)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(fig: dict[str, Any]) -> str:
    """Figure dict → "[lo, hi]" or "n/a"."""
    ci = fig.get("ci")
    return "n/a" if not ci or ci[0] is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _confusion_png(path: Path, field: str, cm: dict[str, Any]) -> None:
    labels, m = cm["labels"], cm["matrix"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 1.0 + 0.8 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(field)
    top = max((max(r) for r in m), default=0) or 1
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _reliability_png(path: Path, bins: list[dict[str, Any]], ece: float | None) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    xs = [b["confidence"] for b in bins if b["n"]]
    ys = [b["accuracy"] for b in bins if b["n"]]
    ns = [b["n"] for b in bins if b["n"]]
    ax.bar([(b["bin"][0] + b["bin"][1]) / 2 for b in bins if b["n"]], ys, width=0.09, alpha=0.35,
           label="accuracy per bin")
    ax.scatter(xs, ys, s=[12 + min(3 * n, 200) for n in ns], zorder=3, label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title(f"reliability (ECE {fmt(ece)})")
    ax.legend(loc="upper left", fontsize=7, markerscale=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw(run_dir: Path, record: dict[str, Any]) -> dict[str, str]:
    """Run record → images under img/; returns {name: relative path}."""
    m = record["metrics"]
    (run_dir / IMG).mkdir(exist_ok=True)
    out = {}
    for field, cm in m["confusion"].items():
        rel = f"{IMG}/confusion_{field}.png"
        _confusion_png(run_dir / rel, field, cm)
        out[f"confusion_{field}"] = rel
    ece = (m["figures"].get("ece") or {}).get("value")
    _reliability_png(run_dir / f"{IMG}/reliability.png", m["reliability"], ece)
    out["reliability"] = f"{IMG}/reliability.png"
    return out


MD = """# Eval run: {{ c.model }}

- started {{ r.started_at }}, finished {{ r.finished_at }}, status **{{ r.status }}**, labeling wall time {{ "%.1f"|format(r.wall_s) }} s
- gold: {{ gold_desc }}
- items: {{ m.n_items }} ({{ m.n_failed }} failed{% if m.failures %}: {% for k, v in m.failures.items() %}{{ k }} {{ v }}{{ ", " if not loop.last }}{% endfor %}{% endif %}); items SHA-256 `{{ c.items_sha256[:16] }}`
- prompt hash `{{ c.prompt_hash[:16] }}`
- intervals: 95% percentile bootstrap over items ({{ m.bootstrap.resamples }} resamples, seed {{ m.bootstrap.seed }})

## Headline figures

| figure | value | 95% CI | n |
| --- | ---: | --- | ---: |
{% for name, f in m.figures.items() -%}
| {{ name }}{% if name in lower %} (lower is better){% endif %} | {{ fmt(f.value) }} | {{ fmt_ci(f) }} | {{ f.n }} |
{% endfor %}
{% if m.fnc %}
Official FNC-1 score: {{ "%.2f"|format(m.fnc.score) }} of {{ "%.2f"|format(m.fnc.max) }} ({{ fmt(m.figures["fnc.score"].value) }} relative).
{% endif %}
Triggers: {{ m.triggers.true_positives }} right of {{ m.triggers.predicted }} predicted, {{ m.triggers.gold }} in gold.

{% if by_origin %}## By origin

| origin | figure | value | 95% CI | n |
| --- | --- | ---: | --- | ---: |
{% for origin, figs in by_origin.items() %}{% for name, f in figs.items() -%}
| {{ origin }} | {{ name }} | {{ fmt(f.value) }} | {{ fmt_ci(f) }} | {{ f.n }} |
{% endfor %}{% endfor %}
{% endif %}
## Confusion matrices (rows gold, columns predicted)
{% for field, cm in m.confusion.items() %}
### {{ field }}

![{{ field }}]({{ images["confusion_" + field] }})

| gold \\ predicted | {{ cm.labels|join(" | ") }} |
| --- |{% for _ in cm.labels %} ---: |{% endfor %}
{% for row in cm.matrix %}{% if cm.labels[loop.index0] not in ("none", "failed") -%}
| {{ cm.labels[loop.index0] }} | {{ row|join(" | ") }} |
{% endif %}{% endfor %}{% endfor %}
## Calibration

![reliability]({{ images.reliability }})

| confidence bin | n | mean confidence | accuracy |
| --- | ---: | ---: | ---: |
{% for b in m.reliability -%}
| {{ "%.1f"|format(b.bin[0]) }}–{{ "%.1f"|format(b.bin[1]) }} | {{ b.n }} | {{ fmt(b.confidence) }} | {{ fmt(b.accuracy) }} |
{% endfor %}
## Cost, tokens and latency per item

| measure | p50 | p95 | total |
| --- | ---: | ---: | ---: |
{% for name, v in m.cost.items() -%}
| {{ name }} | {{ fmt(v.p50, 4 if name == "cost_usd" else 1) }} | {{ fmt(v.p95, 4 if name == "cost_usd" else 1) }} | {{ fmt(v.total, 4 if name == "cost_usd" else 1) }} |
{% endfor %}
{% if m.errors %}## Failures

| error type | items |
| --- | ---: |
{% for k, v in m.errors.items() -%}
| {{ k }} | {{ v }} |
{% endfor %}{% endif %}"""

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Eval run: {{ c.model }}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}</style></head><body>
<h1>Eval run: {{ c.model }}</h1>
<ul><li>started {{ r.started_at }}, finished {{ r.finished_at }}, status <b>{{ r.status }}</b>,
labeling wall time {{ "%.1f"|format(r.wall_s) }} s</li><li>gold: {{ gold_desc }}</li>
<li>items: {{ m.n_items }} ({{ m.n_failed }} failed); items SHA-256 <code>{{ c.items_sha256[:16] }}</code></li>
<li>prompt hash <code>{{ c.prompt_hash[:16] }}</code></li>
<li>intervals: 95% percentile bootstrap over items ({{ m.bootstrap.resamples }} resamples, seed {{ m.bootstrap.seed }})</li></ul>
<h2>Headline figures</h2>
<table><tr><th>figure</th><th>value</th><th>95% CI</th><th>n</th></tr>
{% for name, f in m.figures.items() %}<tr><td>{{ name }}{% if name in lower %} (lower is better){% endif %}</td>
<td class="n">{{ fmt(f.value) }}</td><td>{{ fmt_ci(f) }}</td><td class="n">{{ f.n }}</td></tr>
{% endfor %}</table>
{% if m.fnc %}<p>Official FNC-1 score: {{ "%.2f"|format(m.fnc.score) }} of {{ "%.2f"|format(m.fnc.max) }}
({{ fmt(m.figures["fnc.score"].value) }} relative).</p>{% endif %}
<p>Triggers: {{ m.triggers.true_positives }} right of {{ m.triggers.predicted }} predicted, {{ m.triggers.gold }} in gold.</p>
<h2>Confusion matrices (rows gold, columns predicted)</h2>
{% for field, cm in m.confusion.items() %}<h3>{{ field }}</h3>
<img src="{{ images["confusion_" + field] }}" alt="confusion matrix for {{ field }}">
{% endfor %}
<h2>Calibration</h2><img src="{{ images.reliability }}" alt="reliability diagram">
<h2>Cost, tokens and latency per item</h2>
<table><tr><th>measure</th><th>p50</th><th>p95</th><th>total</th></tr>
{% for name, v in m.cost.items() %}<tr><td>{{ name }}</td><td class="n">{{ fmt(v.p50, 4 if name == "cost_usd" else 1) }}</td>
<td class="n">{{ fmt(v.p95, 4 if name == "cost_usd" else 1) }}</td><td class="n">{{ fmt(v.total, 4 if name == "cost_usd" else 1) }}</td></tr>
{% endfor %}</table>
{% if m.errors %}<h2>Failures</h2><table>{% for k, v in m.errors.items() %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</body></html>
"""


def gold_description(gold: dict[str, Any]) -> str:
    """Run config's gold block → one line (files and hash, or dataset, sample and seed)."""
    parts = []
    if gold.get("files"):
        parts.append(", ".join(gold["files"]) + f" (SHA-256 {str(gold.get('sha256'))[:16]})")
    ds = gold.get("dataset")
    if ds:
        parts.append(f"{ds['name']} sample {ds.get('sample')} seed {ds.get('seed')}: {ds.get('mapping')}")
    return "; ".join(parts) or "(none)"


def write_report(run_dir: str | Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Run folder + record → (report.md, report.html) paths, images drawn first."""
    run_dir = Path(run_dir)
    images = draw(run_dir, record)
    ctx = {"r": record, "c": record["config"], "m": record["metrics"], "images": images,
           "by_origin": record.get("metrics_by_origin") or {}, "fmt": fmt, "fmt_ci": fmt_ci,
           "lower": LOWER_IS_BETTER, "gold_desc": gold_description(record["config"]["gold"])}
    md = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(MD)
    html = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True).from_string(HTML)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(md.render(**ctx), encoding="utf-8")
    html_path.write_text(html.render(**ctx), encoding="utf-8")
    return md_path, html_path
