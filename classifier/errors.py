"""One exception tree for the whole product.

    EvidenceError                  base; every error we raise on purpose
    ├── ConfigError                a settings/feeds/theses file is wrong (file, key, line)
    ├── StoreError                 the database refused or is unreachable
    │   └── LeaseLost              a worker's claim expired before it committed
    ├── FetchError                 stage 1: a feed or page could not be fetched
    │   ├── BlockedAddress         the guard refused a private/loopback/reserved address
    │   ├── TooLarge               the decoded body passed the byte cap
    │   ├── Deadline               the per-request deadline passed
    │   ├── TooManyRedirects
    │   ├── BadScheme              not http/https
    │   └── HTTPStatusError        a status we do not handle as success (carries status, retry_after)
    ├── ExtractError               stage 2: trafilatura could not produce text
    ├── RouterUnavailable          stage 4: the sentence-embedding model cannot be loaded
    ├── LabelError                 stage 5
    │   ├── BackendUnavailable     the backend cannot start (no model file, no server)
    │   ├── TransportError         timeouts, connection errors, 5xx, 429 after retries
    │   ├── LabelingFailed         the model's answer stayed invalid/ungrounded after re-asks
    │   └── BudgetExceeded         the run's --budget is spent
    ├── ReviewError                stage 6
    │   ├── Conflict               the item changed since the form was shown
    │   ├── Forbidden              role or CSRF check failed
    │   └── NotFound               no such label, thesis or decision
    └── LedgerError                stage 7: a probability change was refused (range, note, user)

Errors carry context as attributes; `cli.py` and the web handlers turn them into messages.
"""

from __future__ import annotations


class EvidenceError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(EvidenceError):
    """A configuration file is invalid; names the file, the key and the line."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.path, self.key, self.line = path, key, line
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (key {key!r})" if key else ""
        super().__init__(f"{prefix}{message}{suffix}")


class StoreError(EvidenceError):
    """The database refused an operation or could not be reached."""


class LeaseLost(StoreError):
    """A worker tried to commit work whose lease had expired or moved to another worker."""


class FetchError(EvidenceError):
    """Stage 1 could not fetch a URL; `reason` is a short stable code stored with the item."""

    reason = "fetch_error"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(f"{message} ({url})" if url else message)


class BlockedAddress(FetchError):
    """The address guard refused a private, loopback, link-local or reserved address."""

    reason = "blocked_address"


class TooLarge(FetchError):
    """The decoded body exceeded the configured byte cap."""

    reason = "too_large"


class Deadline(FetchError):
    """The overall per-request deadline passed (slow or hanging server)."""

    reason = "deadline"


class TooManyRedirects(FetchError):
    """More redirects than allowed."""

    reason = "too_many_redirects"


class BadScheme(FetchError):
    """Only http and https are fetched."""

    reason = "bad_scheme"


class HTTPStatusError(FetchError):
    """A status code that is not a success for our purposes."""

    reason = "http_status"

    def __init__(self, message: str, *, url: str | None = None, status: int,
                 retry_after: float | None = None) -> None:
        self.status, self.retry_after = status, retry_after
        super().__init__(message, url=url)


class ExtractError(EvidenceError):
    """Stage 2 could not extract text from a page."""


class RouterUnavailable(EvidenceError):
    """Stage 4's embedding model (or sentence-transformers) is missing or cannot load."""


class LabelError(EvidenceError):
    """Base for stage 5 errors."""


class BackendUnavailable(LabelError):
    """A labeling backend cannot start: missing model file, package or server."""


class TransportError(LabelError):
    """The backend could not be reached or kept failing after the bounded retries."""

    def __init__(self, message: str, *, error_type: str = "transport", attempts: int = 0) -> None:
        self.error_type, self.attempts = error_type, attempts
        super().__init__(message)


class LabelingFailed(LabelError):
    """The model's answer stayed invalid or ungrounded after the allowed re-asks."""

    def __init__(self, message: str, *, error_type: str, attempts: int,
                 last_raw: str | None = None) -> None:
        self.error_type, self.attempts, self.last_raw = error_type, attempts, last_raw
        super().__init__(message)


class BudgetExceeded(LabelError):
    """The run's spending cap is reached; remaining pairs stay pending."""


class ReviewError(EvidenceError):
    """Base for review-queue errors."""


class Conflict(ReviewError):
    """The item changed since the editor's form was rendered, or another editor holds it."""


class Forbidden(ReviewError):
    """The user's role or the request's CSRF token does not allow this."""


class NotFound(ReviewError):
    """A label, thesis or decision the request names does not exist."""


class LedgerError(EvidenceError):
    """Stage 7 refused to record a probability: out of (0, 1), no note, or not an editor."""
