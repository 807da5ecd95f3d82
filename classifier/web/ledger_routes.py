"""The ledger on the thesis page: probabilities, a server-rendered SVG timeline, items, triggers,
and the "Apply" form (CSRF via the app-wide guard; editor or admin role).

`create_app` includes `router`; importing this module registers the thesis-page panel.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup, escape
from sqlalchemy import Connection

from classifier import ledger
from classifier.config import ThesesFile, ThesisConfig
from classifier.errors import LedgerError, NotFound
from classifier.store import write
from classifier.store.engine import as_utc, utcnow
from classifier.users import User
from classifier.web.app import register_thesis_panel
from classifier.web.auth import require_role
from classifier.web.templating import render

router = APIRouter()
EditorUser = Annotated[User, Depends(require_role("editor"))]


def panel_context(conn: Connection, thesis_id: str, config: ThesisConfig | None,
                  theses_file: ThesesFile | None = None) -> dict[str, Any]:
    """Thesis → the ledger panel's data: ledger result, current value, history, SVG plot."""
    if config is None:
        return {"ledger": None, "thesis_id": thesis_id}
    result = ledger.ledger_for(conn, config, theses_file)
    history = ledger.load_history(conn, thesis_id)
    items = ledger.load_evidence(conn, thesis_id)
    points = ledger.running_values(config, items, history, table=result.table)
    current = history[-1].to_probability if history else config.probability
    return {"ledger": result, "thesis_id": thesis_id, "current": current,
            "history": list(reversed(history)),
            "plot": timeline_svg(config, history, points, now=utcnow())}


register_thesis_panel("ledger_panel.html", panel_context)


@router.post("/thesis/{thesis_id}/apply")
def apply(request: Request, thesis_id: str, user: EditorUser,
          percent: Annotated[float, Form(gt=0, lt=100)],
          note: Annotated[str, Form(max_length=2000)],
          current: Annotated[float | None, Form(gt=0, lt=1)] = None) -> Response:
    """Apply form (percent, note) → a probability_history row; back to the thesis page."""
    desk = request.app.state.desk
    try:
        thesis = desk.theses.get(thesis_id)
    except Exception as e:  # ConfigError: not in the theses file the desk was started with
        raise NotFound(f"no thesis {thesis_id!r} in the theses file") from e
    try:
        with write(desk.engine) as conn:
            ledger.apply_probability(conn, thesis, to=round(percent / 100.0, 6),
                                     user_name=user.name, note=note, theses_file=desk.theses,
                                     expected_from=current)
    except LedgerError as e:
        status = 409 if "changed" in str(e) else 422
        return render(request, "error.html", {"title": "Not applied", "message": str(e),
                                              "status": status}, status_code=status)
    return RedirectResponse(f"/thesis/{quote(thesis_id)}?applied=1#ledger", status_code=303)


# ---------------------------------------------------------------------------------------------
# The timeline, as SVG text (presentation attributes only: the CSP forbids inline styles)
# ---------------------------------------------------------------------------------------------

W, H = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 44, 130, 14, 40
APPLIED_COLOUR, LEDGER_COLOUR, TRIGGER_COLOUR = "#1f4e79", "#c0392b", "#7f8c8d"


def timeline_svg(thesis: ThesisConfig, history: list[ledger.HistoryPoint],
                 points: list[ledger.TimelinePoint], *, now: datetime) -> Markup:
    """History and the ledger's running values → an SVG chart (probability over time)."""
    times = [as_utc(h.created_at) for h in history] + [as_utc(p.at) for p in points]
    start = min([t for t in times if t is not None], default=now - timedelta(days=1))
    span = max((now - start).total_seconds(), 1.0)
    start = now - timedelta(seconds=span * 1.08)  # a margin so the first step is visible
    span = (now - start).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + (W - LEFT - RIGHT) * (as_utc(t) - start).total_seconds() / span

    def y(p: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1.0 - p)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="ledger-plot" viewBox="0 0 {W} {H}" '
           f'width="{W}" height="{H}" role="img" aria-labelledby="ledger-plot-title">',
           f'<title id="ledger-plot-title">{escape(thesis.id)}: applied probability and the '
           'ledger\'s running value over time</title>']
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):  # y grid and ticks
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(p):.1f}" y2="{y(p):.1f}" '
                   'stroke="#e5e5e5" stroke-width="1"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(p) + 4:.1f}" text-anchor="end" font-size="11" '
                   f'fill="#555">{p * 100:.0f}%</text>')
    for t in thesis.trigger:  # trigger levels
        out.append(f'<line class="trigger-line" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(t.to):.1f}" '
                   f'y2="{y(t.to):.1f}" stroke="{TRIGGER_COLOUR}" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{W - RIGHT + 4}" y="{y(t.to) + 4:.1f}" font-size="11" '
                   f'fill="{TRIGGER_COLOUR}">{escape(t.id)} {t.to * 100:.0f}%</text>')
    for t, anchor in ((start, "start"), (now, "end")):  # x labels
        out.append(f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="{anchor}" '
                   f'font-size="11" fill="#555">{t:%Y-%m-%d %H:%M}</text>')

    # the applied probability: a step line from the stated value through each apply to now
    path = [f"M{x(start):.1f},{y(thesis.probability):.1f}"]
    for h in history:
        path.append(f"H{x(h.created_at):.1f}V{y(h.to_probability):.1f}")
    path.append(f"H{x(now):.1f}")
    out.append(f'<path class="applied-line" d="{"".join(path)}" fill="none" '
               f'stroke="{APPLIED_COLOUR}" stroke-width="2.5"/>')

    # the ledger's running value: steps at each approval, restarting at each apply
    value, path = thesis.probability, [f"M{x(start):.1f},{y(thesis.probability):.1f}"]
    dots = []
    for p in points:
        path.append(f"H{x(p.at):.1f}V{y(p.probability):.1f}")
        value = p.probability
        if p.label_id is not None:
            dots.append(f'<circle class="ledger-point" cx="{x(p.at):.1f}" '
                        f'cy="{y(p.probability):.1f}" r="3.5" fill="{LEDGER_COLOUR}"><title>'
                        f'label {p.label_id}: {p.probability * 100:.1f}% after '
                        f'{p.at:%Y-%m-%d %H:%M}</title></circle>')
    path.append(f"H{x(now):.1f}")
    out.append(f'<path class="ledger-line" d="{"".join(path)}" fill="none" '
               f'stroke="{LEDGER_COLOUR}" stroke-width="1.8" stroke-dasharray="6 3"/>')
    out += dots
    label_y = y(value) + 4
    for t in thesis.trigger:  # keep the ledger's label clear of the trigger labels
        if abs(label_y - (y(t.to) + 4)) < 12:
            label_y = y(t.to) + 4 + (12 if value < t.to else -12)
    out.append(f'<text x="{W - RIGHT + 4}" y="{label_y:.1f}" font-size="11" '
               f'fill="{LEDGER_COLOUR}">ledger {value * 100:.1f}%</text>')

    legend_y = H - 8
    out.append(f'<line x1="{LEFT}" x2="{LEFT + 22}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
               f'stroke="{APPLIED_COLOUR}" stroke-width="2.5"/>'
               f'<text x="{LEFT + 28}" y="{legend_y}" font-size="11">applied probability</text>')
    out.append(f'<line x1="{LEFT + 170}" x2="{LEFT + 192}" y1="{legend_y - 4}" '
               f'y2="{legend_y - 4}" stroke="{LEDGER_COLOUR}" stroke-width="1.8" '
               f'stroke-dasharray="6 3"/><text x="{LEFT + 198}" y="{legend_y}" font-size="11">'
               'ledger (suggested)</text>')
    out.append(f'<line x1="{LEFT + 340}" x2="{LEFT + 362}" y1="{legend_y - 4}" '
               f'y2="{legend_y - 4}" stroke="{TRIGGER_COLOUR}" stroke-dasharray="4 4"/>'
               f'<text x="{LEFT + 368}" y="{legend_y}" font-size="11">trigger levels</text>')
    out.append("</svg>")
    return Markup("".join(out))
