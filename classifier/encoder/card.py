"""A model folder: `weights.safetensors` (the fine-tuned layers, fp16), `card.json` (what made
it: data files with SHA-256, base weights, settings, split, calibration, metrics, time) and
`README.md` (the same card for people, in the manner of sentence-transformers' model cards).

The version of a model is the first 12 hex digits of its weights' SHA-256; loading checks the
weights against the card, so a folder whose files were changed or mixed up fails clearly.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.encoder.network import BASE_PACKAGE, WEIGHTS_FILE, EvidenceEncoder, base_dir, \
    sha256_file
from classifier.errors import BackendUnavailable

CARD_JSON = "card.json"
CARD_MD = "README.md"
INSTALL_HINT = ("install the package with its encoder (`make demo` or `pip install -e .`), or "
                "train one: evidence model train --out PATH")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def base_info() -> dict[str, Any]:
    """→ what the base weights are: package, version, SHA-256 of its safetensors file."""
    path = base_dir() / "model.safetensors"
    return {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": BASE_PACKAGE,
            "version": _version(BASE_PACKAGE), "sha256": sha256_file(path),
            "frozen": "word, position and token-type embeddings (read from the package)"}


def environment() -> dict[str, Any]:
    """→ the software a model was trained with."""
    return {"python": platform.python_version(), "torch": _version("torch"),
            "transformers": _version("transformers"), "machine": platform.machine()}


def write(folder: Path, model: EvidenceEncoder, card: dict[str, Any]) -> dict[str, Any]:
    """Network + card fields → folder with weights, card.json and README.md; → the full card."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    model.save_weights(weights)
    digest = sha256_file(weights)
    card = {"format": 1, "version": digest[:12], "weights": {"file": WEIGHTS_FILE, "sha256": digest,
            "bytes": weights.stat().st_size, "dtype": "float16"}, **card}
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    (folder / CARD_MD).write_text(render_markdown(card), encoding="utf-8")
    return card


def update(folder: Path, **fields: Any) -> dict[str, Any]:
    """Model folder + fields → card.json and README.md rewritten with them (weights untouched)."""
    card = read_card(folder)
    card.update(fields)
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    (folder / CARD_MD).write_text(render_markdown(card), encoding="utf-8")
    return card


def read_card(folder: Path) -> dict[str, Any]:
    """Model folder → its card; BackendUnavailable naming the folder and the fix if absent."""
    path = Path(folder) / CARD_JSON
    if not path.is_file():
        raise BackendUnavailable(f"no encoder model in {folder} (no {CARD_JSON}): {INSTALL_HINT}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BackendUnavailable(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e


@dataclass
class Loaded:
    """A model folder, loaded: the network (eval mode), its card and its folder."""

    model: EvidenceEncoder
    card: dict[str, Any]
    folder: Path

    @property
    def version(self) -> str:
        """→ the model's version (weights hash prefix)."""
        return str(self.card["version"])


def load(folder: Path) -> Loaded:
    """Model folder → Loaded, after checking the weights' SHA-256 against the card."""
    folder = Path(folder)
    card = read_card(folder)
    weights = folder / card["weights"]["file"]
    if not weights.is_file():
        raise BackendUnavailable(f"encoder weights missing: {weights}: {INSTALL_HINT}")
    digest = sha256_file(weights)
    if digest != card["weights"]["sha256"]:
        raise BackendUnavailable(f"{weights} does not match its card (SHA-256 {digest[:12]}, "
                                 f"card says {card['weights']['sha256'][:12]})")
    want = card.get("base", {}).get("version")
    have = _version(BASE_PACKAGE)
    if want and have != want:
        raise BackendUnavailable(f"the encoder in {folder} was trained on {BASE_PACKAGE}=={want}; "
                                 f"installed: {have}")
    model = EvidenceEncoder(base_dir())
    model.load_weights(weights)
    model.eval()
    return Loaded(model=model, card=card, folder=folder)


def _fig(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None:
        return "-"
    ci = f.get("ci")
    band = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else ""
    return f"{f['value']:.3f}{band} (n={f.get('n')})"


FIGURES = ("relevant.accuracy", "direction.macro_f1", "direction.f1.supports",
           "direction.f1.undermines", "direction.f1.neutral", "direction.recall.undermines",
           "evidence_type.accuracy", "strength.qwk", "exact_match", "ece", "fnc.score",
           "fnc.macro_f1")


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    lines = [f"### promotion gate: {'passed' if gate.get('passed') else 'refused'}", "",
             "| set | items | figure | parent | this version |", "| --- | --- | --- | --- | --- |"]
    for name, s in gate.get("sets", {}).items():
        for k, v in s["parent"].items():
            c = s["candidate"].get(k)
            lines.append(f"| {name} | {s['n']} | {k} | {_num(v)} | {_num(c)} |")
    lines += [f"Problems: {'; '.join(p for s in gate.get('sets', {}).values() for p in s['problems'])}"
              if not gate.get("passed") else "No figure below the parent's value minus "
              "max(0.05, 2/n).", ""]
    return lines


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def render_markdown(card: dict[str, Any]) -> str:
    """Card → README.md text."""
    s = card.get("settings", {})
    lines = [f"# Evidence encoder {card['version']}", "",
             "A cross-encoder that judges one news article against one forecast thesis: relevant, "
             "evidence type, direction, strength, with a calibrated confidence. Fine-tuned from "
             f"{card.get('base', {}).get('name')} (`{BASE_PACKAGE}` "
             f"{card.get('base', {}).get('version')}); {card.get('base', {}).get('frozen', '')} "
             "are frozen, so this folder stores only the transformer layers and heads.", "",
             "**Use it** as a second opinion beside an LLM labeler, for triage and for the "
             "counter-evidence an LLM misses; check its direction before trusting it (see the "
             "metrics below). It proposes no trigger, and its quotes are the sentences its "
             "decision leaned on, not a summary.",
             "", "## Training data", "", "| file | SHA-256 | items |", "| --- | --- | --- |"]
    for src in card.get("data", []):
        lines.append(f"| `{src['path']}` | `{src.get('sha256', '')[:16]}` | {src['items']} |")
    for name, n in (card.get("corpora") or {}).items():
        lines.append(f"| corpus `{name}` (train split, class-balanced) | - | {n} |")
    split = card.get("split", {})
    lines += ["", f"Theses: {split.get('counts')}. Held-out and calibration theses are never "
              "trained on; corpora train only on their train split (FNC-1/ARC by body, the "
              "others by claim).", "", "## Settings", "", "```json",
              json.dumps(s, indent=1), "```", "", "## Metrics (data never trained on)", ""]
    if card.get("parent"):
        lines += [f"Fine-tuned from version {card['parent']} on editors' decisions (calibration "
                  "kept from it).", ""]
    for name, run in (card.get("metrics") or {}).items():
        if name == "gate":
            lines += _gate_lines(run)
            continue
        lines += [f"### {name}", "", f"{run.get('what', '')}", "", "| figure | value [95% CI] |",
                  "| --- | --- |"]
        figs = run.get("figures", {})
        lines += [f"| {k} | {_fig(figs.get(k))} |" for k in FIGURES if k in figs]
        lines.append("")
    cal = card.get("calibration", {})
    lines += ["## Calibration", "", f"{cal.get('method', '')}; fitted on {cal.get('n_items')} "
              f"items of the calibration theses.", "", f"Temperatures: {cal.get('temperatures')}; "
              f"confidence map: {cal.get('confidence_map')}.", "",
              "## Time", "", f"{card.get('time', {})} on {card.get('environment', {})}.", "",
              "## Reproduce", "", "```bash", card.get("command", ""), "```", ""]
    return "\n".join(lines)
