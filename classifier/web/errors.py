"""Our errors → responses: a page for people, JSON under /api. The only place the web app
translates `classifier.errors` into status codes."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from classifier.errors import Conflict, Forbidden, NotFound, ReviewError
from classifier.web.auth import NotSignedIn
from classifier.web.templating import render

STATUS = [(Conflict, 409, "Conflict"), (Forbidden, 403, "Forbidden"), (NotFound, 404, "Not found"),
          (ReviewError, 422, "Not possible")]


def wants_json(request: Request) -> bool:
    """Request → whether to answer in JSON (the /api routes)."""
    return request.url.path.startswith("/api/")


def _page(request: Request, status: int, title: str, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": title.lower().replace(" ", "_"), "message": message},
                            status_code=status)
    template = "conflict.html" if status == 409 else "error.html"
    label_id = request.path_params.get("label_id")
    return render(request, template, {"title": title, "message": message, "status": status,
                                      "label_id": label_id}, status_code=status)


async def _review_error(request: Request, exc: Exception) -> Response:
    for cls, status, title in STATUS:
        if isinstance(exc, cls):
            return _page(request, status, title, str(exc))
    raise exc


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and not wants_json(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return _page(request, 401, "Signed out", "sign in first (your session ended or never began)")


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "body" for e in exc.errors())
    return _page(request, 422, "Invalid request", f"missing or invalid: {fields}")


def install(app: FastAPI) -> None:
    """App → its handlers for our errors, sign-in redirects and invalid requests."""
    app.add_exception_handler(ReviewError, _review_error)
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(RequestValidationError, _invalid)
