"""Jinja2 rendering: autoescaped templates, untrusted-text helpers, `render()` for every page.

base.html blocks: `title`, `head` (extra <link> tags), `nav`, `content`, `scripts` (only
`<script src="/static/...">`: the CSP refuses inline script). Templates read `user`,
`csrf_token` and `desk` from every context; forms include `{{ csrf_field() }}`.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.autoescape = True  # every template, whatever its file name


def safe_href(url: str | None) -> str | None:
    """An untrusted URL → itself if it is plain http(s), else None (shown as text, not a link)."""
    if not url or any(ord(c) < 33 or c in "\\\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


# quotes are checked after normalising whitespace, quote marks and dashes: match them the same way
_QUOTE_CHARS, _DASH_CHARS = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb", "-\u2013\u2014\u2212"
_LOOSE = {" ": r"\s+", **{c: f"[{re.escape(_QUOTE_CHARS)}]" for c in _QUOTE_CHARS},
          **{c: f"[{re.escape(_DASH_CHARS)}]" for c in _DASH_CHARS}}


def highlight(text: str, quotes: list[str] | None) -> list[tuple[str, bool]]:
    """Article text, quotes → segments (text, is_quote); quotes match whitespace-normalised."""
    spans: list[tuple[int, int]] = []
    for q in quotes or []:
        if not q.split():
            continue
        pattern = "".join(_LOOSE.get(ch, re.escape(ch)) for ch in " ".join(q.split()))
        spans += [(m.start(), m.end()) for m in re.finditer(pattern, text)]
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], 0
    for s, e in merged:
        if s > pos:
            out.append((text[pos:s], False))
        out.append((text[s:e], True))
        pos = e
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def form_key() -> str:
    """→ a fresh idempotency key for one rendered form."""
    return secrets.token_urlsafe(16)


templates.env.globals["safe_href"] = safe_href  # macros imported without context need it


def _csrf_field(token: str) -> Markup:
    return Markup('<input type="hidden" name="csrf" value="{}">').format(escape(token))


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:
    """Request, template name, context → the page, with user, CSRF token and theses filled in."""
    sess = getattr(request.state, "session", None)
    token = sess.csrf_token if sess else ""
    base = {"user": sess.user if sess else None, "csrf_token": token,
            "csrf_field": lambda: _csrf_field(token), "desk": request.app.state.desk,
            "form_key": form_key}
    return templates.TemplateResponse(request, template, {**base, **(context or {})},
                                      status_code=status_code)
