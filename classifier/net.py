"""The only HTTP client for feeds and pages: timeouts, byte cap, redirects, address guard.

    Client.get(url) ──▶ for each hop (≤ max_redirects):
        scheme check ─▶ per-host semaphore ─▶ GuardedBackend.connect_tcp:
            getaddrinfo ─▶ every resolved IP checked ─▶ connect to that same IP
        ─▶ status: 3xx next hop │ 304 Page(304) │ 2xx read capped body │ else HTTPStatusError

The guard lives in the transport (an httpcore network backend), not in a URL pre-check: the
address we check is the address we connect to, so DNS rebinding, redirects and odd IP spellings
(`http://2130706433/`, `0x7f.1`, `[::ffff:127.0.0.1]`) meet the same check. Bodies are decoded by
us from the raw stream with zlib's `max_length`, so a gzip bomb stops at the cap without ever
inflating past it. The per-request deadline is enforced on every socket read, not only between
chunks, so a server trickling one byte a second or hanging after the headers ends at the deadline.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from classifier import USER_AGENT
from classifier.config import NetSettings
from classifier.errors import (
    BadScheme,
    BlockedAddress,
    Deadline,
    FetchError,
    HTTPStatusError,
    TooLarge,
    TooManyRedirects,
)
from classifier.records import Page

REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024

# The running request's deadline (time.monotonic()), per thread: httpx's sync client does its
# socket reads in the calling thread, so the backend's streams can clamp every read to it.
_local = threading.local()


# ---------------------------------------------------------------------------------------------
# Address guard
# ---------------------------------------------------------------------------------------------


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: IPv4 in the low bits


def blocked_reason(ip: str) -> str | None:
    """IP address text → why the guard refuses it ("loopback", ...), or None when public."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(addr, ipaddress.IPv6Address):
        # An IPv4 address smuggled inside IPv6 is judged as the IPv4 address it carries.
        inner = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if inner is None and addr in _NAT64:
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None:
            return blocked_reason(str(inner))
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(addr, f"is_{name}"):
            return name.replace("_", "-")
    if not addr.is_global:  # shared address space 100.64/10 and the like
        return "not globally routable"
    return None


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write timeout is cut to the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      _clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    """A socket timeout → the smaller of it and the time left before this request's deadline."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("request deadline passed")
    return left if timeout is None else min(timeout, left)


def _new_resolver() -> None:
    global _DNS
    _DNS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns")


_new_resolver()
# A forked child (worker processes) inherits the pool's bookkeeping but not its threads:
# give it a pool of its own, or every lookup would wait forever in a queue nobody reads.
os.register_at_fork(after_in_child=_new_resolver)


def _resolve(host: str, port: int, timeout: float | None) -> list[Any]:
    """Host, port → getaddrinfo answers, within `timeout` (getaddrinfo itself has none)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a canonical IP literal: nothing to look up, no thread needed
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_NUMERICHOST)
    fut = _DNS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return fut.result(timeout=timeout)
    except FutureTimeout as e:
        raise httpcore.ConnectTimeout(f"resolving {host!r} took too long") from e
    except (socket.gaierror, UnicodeError) as e:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {e}") from e


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore backend: resolve, refuse non-public addresses, connect to the checked IP."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        """Host and port → a connected stream to a resolved, checked address (or BlockedAddress)."""
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        infos = _resolve(host, port, timeout)
        ips = list(dict.fromkeys(info[4][0] for info in infos))
        if not self.allow_private:
            # Every answer is checked, not just the first: a mixed answer is refused outright.
            for ip in ips:
                why = self.refuse(host, ip)
                if why:
                    raise BlockedAddress(f"refused {why} address {ip} for host {host!r}")
        error: Exception = httpcore.ConnectError(f"no address for {host!r}")
        for ip in ips:
            try:
                stream = self._inner.connect_tcp(ip, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
                continue
            return _DeadlineStream(stream)
        raise error

    def refuse(self, host: str, ip: str) -> str | None:
        """Host name and one of its resolved IPs → why it is refused, or None to connect."""
        return blocked_reason(ip)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        """Never: feeds and pages are fetched over TCP only."""
        raise BlockedAddress("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        """Seconds → slept (httpcore's retry pause)."""
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose connection pool dials through `GuardedBackend`."""

    def __init__(self, *, allow_private: bool, max_connections: int = 100,
                 backend: GuardedBackend | None = None) -> None:
        super().__init__(trust_env=False)
        # httpx has no public hook for the network backend; the pool it builds is replaced by
        # the same pool with our backend (httpx is pinned <1 in pyproject for this reason).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend or GuardedBackend(allow_private=allow_private),
        )


# ---------------------------------------------------------------------------------------------
# Capped decoding
# ---------------------------------------------------------------------------------------------


class _Decoder:
    """One Content-Encoding layer that never produces more than it is allowed to."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()  # zlib-wrapped; raw deflate is retried below
        else:
            raise FetchError(f"unsupported Content-Encoding {encoding!r}")
        self._first = True

    def feed(self, data: bytes, room: int) -> bytes:
        """Compressed bytes, bytes still allowed → decoded bytes; TooLarge past `room`."""
        try:
            out = self._z.decompress(data, room + 1)
        except zlib.error:
            if not (self.encoding == "deflate" and self._first):
                raise
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, room + 1)
        self._first = False
        if len(out) > room:
            raise TooLarge("decoded body passed the byte cap")
        return out


def _read_capped(response: httpx.Response, *, max_bytes: int, deadline: float) -> bytes:
    """Streaming response → decoded body, stopping at `max_bytes` decoded bytes or the deadline."""
    encodings = [e.strip().lower() for e in response.headers.get("content-encoding", "").split(",")]
    decoders = [_Decoder(e) for e in reversed(encodings) if e and e != "identity"]
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_raw(CHUNK):
            if time.monotonic() > deadline:
                raise Deadline("deadline passed while reading the body")
            for d in decoders:
                chunk = d.feed(chunk, max_bytes - total)
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"body passed the {max_bytes}-byte cap")
            parts.append(chunk)
    except zlib.error as e:
        raise FetchError(f"cannot decode {','.join(encodings)} body: {e}") from e
    return b"".join(parts)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or HTTP date) → seconds from now, or None if unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class Client:
    """The guarded HTTP client; thread-safe; `get(url)` → Page or a FetchError subclass."""

    def __init__(self, settings: NetSettings | None = None, *,
                 backend: GuardedBackend | None = None) -> None:
        """NetSettings (and, for tests, a GuardedBackend subclass) → a ready client."""
        self.settings = settings or NetSettings()
        s = self.settings
        self.user_agent = s.user_agent or USER_AGENT
        self._http = httpx.Client(
            transport=GuardedTransport(allow_private=s.allow_private_networks, backend=backend),
            timeout=httpx.Timeout(s.deadline_s, connect=s.connect_timeout_s),
            follow_redirects=False,  # followed by hand below, each hop through the guard
            trust_env=False,  # no proxy from the environment: the guard must see the real peer
        )
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        self._pid = os.getpid()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    @contextmanager
    def _host_slot(self, url: httpx.URL) -> Iterator[None]:
        # At most `per_host_connections` requests in flight to one host, across threads.
        key = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        if os.getpid() != self._pid:
            # Forked (worker processes): slots held by the parent's threads never come back.
            self._hosts, self._hosts_lock, self._pid = {}, threading.Lock(), os.getpid()
        with self._hosts_lock:
            sem = self._hosts.setdefault(
                key, threading.BoundedSemaphore(self.settings.per_host_connections))
        with sem:
            yield

    def get(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
            accept: str | None = None) -> Page:
        """URL (+ validators from the last poll) → Page; 304 → Page(status=304, body=b"")."""
        s = self.settings
        deadline = 0.0
        current = url
        try:
            for _hop in range(s.max_redirects + 1):
                try:
                    target = httpx.URL(current)
                except (httpx.InvalidURL, TypeError, ValueError) as e:
                    raise FetchError(f"invalid URL: {e}", url=current) from e
                if target.scheme not in ("http", "https"):
                    raise BadScheme(f"scheme {target.scheme!r} is not fetched", url=current)
                headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"}
                if accept:
                    headers["Accept"] = accept
                if etag:
                    headers["If-None-Match"] = etag
                if last_modified:
                    headers["If-Modified-Since"] = last_modified
                with self._host_slot(target):
                    if _hop == 0:
                        # The clock starts once the host has a free slot: time spent queued
                        # behind other requests to the same host is not this request's fault.
                        deadline = time.monotonic() + s.deadline_s
                        _local.deadline = deadline
                    with self._http.stream("GET", target, headers=headers) as r:
                        location = r.headers.get("location")
                        if r.status_code in REDIRECTS and location:
                            current = urljoin(str(r.url), location)
                            continue
                        if r.status_code == 304:
                            return Page(url=url, final_url=str(r.url), status=304,
                                        etag=r.headers.get("etag") or etag,
                                        last_modified=(r.headers.get("last-modified")
                                                       or last_modified))
                        if not 200 <= r.status_code < 300:
                            raise HTTPStatusError(
                                f"HTTP {r.status_code}", url=current, status=r.status_code,
                                retry_after=retry_after_seconds(r.headers.get("retry-after")))
                        body = _read_capped(r, max_bytes=s.max_bytes, deadline=deadline)
                        return Page(url=url, final_url=str(r.url), status=r.status_code,
                                    content_type=r.headers.get("content-type", ""), body=body,
                                    etag=r.headers.get("etag"),
                                    last_modified=r.headers.get("last-modified"))
            raise TooManyRedirects(f"more than {s.max_redirects} redirects", url=url)
        except FetchError as e:
            if e.url is None:
                e.url = current
                e.args = (f"{e} ({current})",)
            raise
        except httpx.TimeoutException as e:
            phase = "connecting" if isinstance(e, httpx.ConnectTimeout) else "waiting for data"
            raise Deadline(f"{s.deadline_s:g}s deadline passed while {phase}", url=current) from e
        except httpx.HTTPError as e:
            raise FetchError(f"{type(e).__name__}: {e}", url=current) from e
        finally:
            _local.deadline = None
