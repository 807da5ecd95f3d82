"""Editors and admins: argon2id password hashes, server-side sessions, the login rate limit.

There is no default account and no sign-up: users come from `evidence user add` or an admin.
The session cookie holds a random token; the database keeps only its SHA-256, with the session's
CSRF token, so a copy of the database does not log anyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from classifier.errors import ReviewError
from classifier.records import Record
from classifier.store import write
from classifier.store.engine import as_utc, utcnow
from classifier.store.tables import login_attempts, sessions, users

Role = Literal["editor", "admin"]
ROLES: tuple[Role, ...] = ("editor", "admin")
SESSION_TTL = timedelta(hours=12)
SESSION_IDLE = timedelta(hours=2)
TOUCH_EVERY = timedelta(minutes=5)  # refresh last_seen_at this rarely: not a write per request
LOGIN_WINDOW = timedelta(minutes=15)
KEEP_ATTEMPTS = timedelta(days=7)  # kept for the audit of sign-ins, then pruned
MAX_FAILS_PER_NAME = 5
MAX_FAILS_PER_IP = 20
MIN_PASSWORD = 10
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"

_hasher = PasswordHasher()  # argon2id with argon2-cffi's maintained defaults
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class User(Record):
    """A signed-in person: what every request knows about its user."""

    id: int
    name: str
    role: Role


class Session(Record):
    """A live session: the user and the CSRF token their forms must carry."""

    id: str  # SHA-256 of the cookie token
    user: User
    csrf_token: str
    expires_at: datetime


class RateLimited(ReviewError):
    """Too many failed logins for this name or address; `retry_after` seconds to wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


def generate_password() -> str:
    """→ a random 20-character password (shown once by `evidence user add`)."""
    return secrets.token_urlsafe(15)


def add_user(engine: Engine, name: str, password: str, *, role: Role = "editor") -> User:
    """Name, password, role → the new user; ReviewError on a bad name, short password, duplicate."""
    if not re.match(NAME_PATTERN, name):
        raise ReviewError(f"bad user name {name!r}: letters, digits, '.', '_', '-'; at most 63")
    if role not in ROLES:
        raise ReviewError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ReviewError(f"password too short: at least {MIN_PASSWORD} characters")
    try:
        with write(engine) as conn:
            user_id = conn.execute(users.insert().values(
                name=name, role=role, password_hash=_hasher.hash(password), created_at=utcnow(),
                disabled=False)).inserted_primary_key[0]
    except IntegrityError as e:
        raise ReviewError(f"user {name!r} already exists") from e
    return User(id=user_id, name=name, role=role)


def set_password(engine: Engine, name: str, password: str) -> User:
    """User name, new password → the user with it; ReviewError if unknown or short. Sessions end."""
    if len(password) < MIN_PASSWORD:
        raise ReviewError(f"password too short: at least {MIN_PASSWORD} characters")
    with write(engine) as conn:
        row = conn.execute(select(users.c.id, users.c.role).where(users.c.name == name)).first()
        if row is None:
            raise ReviewError(f"no user {name!r}")
        conn.execute(users.update().where(users.c.id == row.id)
                     .values(password_hash=_hasher.hash(password)))
        # whoever signed in with the old password is signed out
        conn.execute(sessions.delete().where(sessions.c.user_id == row.id))
    return User(id=row.id, name=name, role=row.role)


def list_users(engine: Engine) -> list[dict[str, object]]:
    """→ every user as {id, name, role, disabled, created_at} (never the hash)."""
    with engine.connect() as conn:
        rows = conn.execute(select(users.c.id, users.c.name, users.c.role, users.c.disabled,
                                   users.c.created_at).order_by(users.c.name)).all()
    return [dict(r._mapping) for r in rows]


def set_disabled(engine: Engine, name: str, disabled: bool) -> None:
    """User name, flag → the user (dis)allowed to sign in; disabling ends their sessions."""
    with write(engine) as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if user_id is None:
            raise ReviewError(f"no user {name!r}")
        conn.execute(users.update().where(users.c.id == user_id).values(disabled=disabled))
        if disabled:
            conn.execute(sessions.delete().where(sessions.c.user_id == user_id))


def _check_rate(engine: Engine, name: str, ip: str, now: datetime) -> None:
    since = now - LOGIN_WINDOW
    with engine.connect() as conn:
        by_name = conn.execute(select(func.count(), func.min(login_attempts.c.created_at)).where(
            login_attempts.c.name == name, login_attempts.c.ok.is_(False),
            login_attempts.c.created_at > since)).one()
        by_ip = conn.execute(select(func.count(), func.min(login_attempts.c.created_at)).where(
            login_attempts.c.ip == ip, login_attempts.c.ok.is_(False),
            login_attempts.c.created_at > since)).one()
    for (n, oldest), cap in ((by_name, MAX_FAILS_PER_NAME), (by_ip, MAX_FAILS_PER_IP)):
        if n >= cap:
            wait = int((as_utc(oldest) + LOGIN_WINDOW - now).total_seconds()) + 1
            raise RateLimited(f"too many failed sign-ins; try again in {max(wait, 1)} s",
                              retry_after=max(wait, 1))


def authenticate(engine: Engine, name: str, password: str, *, ip: str) -> User | None:
    """Name, password, client address → the user, or None; RateLimited after too many failures.

    Every attempt is recorded; failures within LOGIN_WINDOW count against the name and the address.
    """
    now = utcnow()
    name = name.strip()[:100]
    _check_rate(engine, name, ip, now)
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first()
    ok = False
    try:
        ok = _hasher.verify(row.password_hash if row else _DUMMY_HASH, password) and bool(
            row) and not row.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    with write(engine) as conn:
        conn.execute(login_attempts.insert().values(name=name, ip=ip[:64], ok=ok, created_at=now))
        # keep both tables small: old attempts no longer count, expired sessions cannot be used
        conn.execute(login_attempts.delete()
                     .where(login_attempts.c.created_at < now - KEEP_ATTEMPTS))
        conn.execute(sessions.delete().where(sessions.c.expires_at < now))
        if ok and _hasher.check_needs_rehash(row.password_hash):
            conn.execute(users.update().where(users.c.id == row.id)
                         .values(password_hash=_hasher.hash(password)))
    return User(id=row.id, name=row.name, role=row.role) if ok else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(engine: Engine, user: User, *, ip: str | None = None) -> tuple[str, Session]:
    """User → (the cookie token, the stored session). The token is never stored."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    sess = Session(id=_digest(token), user=user, csrf_token=secrets.token_urlsafe(32),
                   expires_at=now + SESSION_TTL)
    with write(engine) as conn:
        conn.execute(sessions.insert().values(id=sess.id, user_id=user.id,
                                              csrf_token=sess.csrf_token, created_at=now,
                                              last_seen_at=now, expires_at=sess.expires_at,
                                              ip=(ip or "")[:64] or None))
    return token, sess


def load_session(engine: Engine, token: str | None) -> Session | None:
    """Cookie token → the live session, or None (unknown, ended, expired, idle or user disabled)."""
    if not token or len(token) > 200:
        return None
    now = utcnow()
    sid = _digest(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(sessions.c.id, sessions.c.csrf_token, sessions.c.expires_at,
                   sessions.c.last_seen_at, users.c.id.label("user_id"), users.c.name,
                   users.c.role, users.c.disabled)
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(sessions.c.id == sid)).first()
    if row is None or row.disabled:
        return None
    last_seen = as_utc(row.last_seen_at)
    if as_utc(row.expires_at) <= now or last_seen + SESSION_IDLE <= now:
        close_session(engine, token)
        return None
    if now - last_seen > TOUCH_EVERY:
        with write(engine) as conn:
            conn.execute(sessions.update().where(sessions.c.id == sid).values(last_seen_at=now))
    return Session(id=row.id, user=User(id=row.user_id, name=row.name, role=row.role),
                   csrf_token=row.csrf_token, expires_at=as_utc(row.expires_at))


def close_session(engine: Engine, token: str | None) -> None:
    """Cookie token → the session deleted server-side (the cookie is worthless afterwards)."""
    if token:
        with write(engine) as conn:
            conn.execute(sessions.delete().where(sessions.c.id == _digest(token)))


def csrf_ok(session: Session, submitted: str | None) -> bool:
    """Session, token from the form or header → whether they match (constant-time)."""
    return bool(submitted) and hmac.compare_digest(session.csrf_token.encode(),
                                                   str(submitted).encode())
