"""net.py against a real local server: deadline, byte cap, redirects, address guard, headers."""

from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest

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
from classifier.net import Client, GuardedBackend, blocked_reason, retry_after_seconds
from tests.faultserver import FaultServer, fault_server  # noqa: F401  (fixture)

OPEN = NetSettings(allow_private_networks=True, deadline_s=3.0, connect_timeout_s=2.0)


class LocalhostOnly(GuardedBackend):
    """The real guard, except that the literal host name "localhost" may reach the test server.

    Redirect targets (127.0.0.1, [::1], 169.254.169.254, 2130706433) are different host names
    and meet the unmodified check: this is how a test shows the guard runs on every hop.
    """

    def refuse(self, host: str, ip: str) -> str | None:
        return None if host == "localhost" and ip == "127.0.0.1" else super().refuse(host, ip)


def guarded(**kw: object) -> Client:
    return Client(NetSettings(deadline_s=3.0, **kw),  # type: ignore[arg-type]
                  backend=LocalhostOnly(allow_private=False))


# --- plain fetching --------------------------------------------------------------------------

def test_get_returns_body_headers_and_sends_user_agent(fault_server: FaultServer) -> None:
    url = fault_server.add("/a.xml", "<rss/>", etag='"v1"',
                           last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    with Client(OPEN) as c:
        page = c.get(url)
    assert (page.status, page.body, page.etag) == (200, b"<rss/>", '"v1"')
    assert page.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert page.content_type.startswith("application/rss+xml")
    assert fault_server.requests[-1][1]["user-agent"] == USER_AGENT


def test_conditional_get_sends_validators_verbatim_and_returns_304(
        fault_server: FaultServer) -> None:
    url = fault_server.add("/a.xml", "<rss/>", etag='W/"abc"')
    with Client(OPEN) as c:
        page = c.get(url, etag='W/"abc"', last_modified="Tue, 02 Jan 2024 00:00:00 GMT")
    assert page.status == 304 and page.body == b""
    sent = fault_server.requests[-1][1]
    assert sent["if-none-match"] == 'W/"abc"'
    assert sent["if-modified-since"] == "Tue, 02 Jan 2024 00:00:00 GMT"


def test_gzip_body_is_decoded(fault_server: FaultServer) -> None:
    url = fault_server.add("/z.xml", gzip.compress(b"<rss>hello</rss>"),
                           headers={"Content-Encoding": "gzip"})
    with Client(OPEN) as c:
        assert c.get(url).body == b"<rss>hello</rss>"


def test_error_status_carries_status_and_retry_after(fault_server: FaultServer) -> None:
    url = fault_server.add("/busy", "slow down", status=429, headers={"Retry-After": "120"})
    gone = fault_server.add("/gone", "", status=410)
    with Client(OPEN) as c:
        with pytest.raises(HTTPStatusError) as e:
            c.get(url)
        assert (e.value.status, e.value.retry_after) == (429, 120.0)
        with pytest.raises(HTTPStatusError) as e:
            c.get(gone)
        assert e.value.status == 410 and e.value.retry_after is None


def test_retry_after_http_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# --- deadline and size -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/hang", "/hang-headers", "/slow"])
def test_deadline_ends_hanging_and_trickling_responses(fault_server: FaultServer,
                                                       path: str) -> None:
    settings = NetSettings(allow_private_networks=True, deadline_s=1.5, connect_timeout_s=1.0)
    start = time.monotonic()
    with Client(settings) as c, pytest.raises(Deadline):
        c.get(fault_server.url(path))
    # /slow would take 100 000 s and /hang 120 s; ending near 1.5 s shows the deadline did it.
    assert time.monotonic() - start < 15


def test_gzip_bomb_stops_at_the_decoded_cap(fault_server: FaultServer) -> None:
    with Client(OPEN.model_copy(update={"deadline_s": 30.0})) as c, pytest.raises(TooLarge):
        c.get(fault_server.url("/gzip-bomb"))


def test_gzip_bomb_cap_is_on_decoded_bytes_not_wire_bytes(fault_server: FaultServer) -> None:
    # The bomb is ~250 KiB on the wire: a wire-bytes cap of 1 MiB would let it through.
    settings = OPEN.model_copy(update={"max_bytes": 1024 * 1024, "deadline_s": 30.0})
    with Client(settings) as c, pytest.raises(TooLarge):
        c.get(fault_server.url("/gzip-bomb"))


def test_twenty_megabyte_body_is_refused(fault_server: FaultServer) -> None:
    with Client(OPEN.model_copy(update={"deadline_s": 30.0})) as c, pytest.raises(TooLarge):
        c.get(fault_server.url("/big"))


# --- redirects -------------------------------------------------------------------------------

def test_redirect_loop_stops_after_five_hops(fault_server: FaultServer) -> None:
    with Client(OPEN) as c, pytest.raises(TooManyRedirects):
        c.get(fault_server.url("/loop"))
    assert fault_server.hits("/loop") == 6  # the first request and five redirects


def test_redirect_is_followed(fault_server: FaultServer) -> None:
    fault_server.add("/final.xml", "<rss/>")
    with Client(OPEN) as c:
        page = c.get(fault_server.url("/redirect?to=/final.xml"))
    assert page.body == b"<rss/>" and page.final_url.endswith("/final.xml")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
def test_only_http_and_https(url: str) -> None:
    with Client(OPEN) as c, pytest.raises(BadScheme):
        c.get(url)


def test_redirect_to_file_scheme_is_refused(fault_server: FaultServer) -> None:
    with Client(OPEN) as c, pytest.raises(BadScheme):
        c.get(fault_server.url("/redirect?to=file:///etc/passwd"))


# --- address guard ---------------------------------------------------------------------------

@pytest.mark.parametrize("ip,why", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.1.1", "private"),
    ("172.16.0.1", "private"), ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("240.0.0.1", "reserved"), ("100.64.0.1", "not globally routable"),
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("2002:7f00:1::", "loopback"), ("::", "unspecified"),
    ("64:ff9b::a00:1", "private"), ("::127.0.0.1", "reserved"),
])
def test_blocked_reason(ip: str, why: str) -> None:
    assert blocked_reason(ip) == why


@pytest.mark.parametrize("ip", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(ip: str) -> None:
    assert blocked_reason(ip) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "017700000001",
                                  "[::1]", "[::ffff:127.0.0.1]", "localhost", "0"])
def test_guard_refuses_loopback_in_every_spelling(fault_server: FaultServer, host: str) -> None:
    url = f"http://{host}:{fault_server.port}/a.xml"
    fault_server.add("/a.xml", "<rss/>")
    with Client(NetSettings(deadline_s=3.0)) as c, pytest.raises(BlockedAddress):
        c.get(url)
    assert fault_server.hits("/a.xml") == 0


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/a.xml", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/a.xml", "http://2130706433:{port}/a.xml", "http://10.0.0.1/",
])
def test_guard_runs_on_every_redirect_hop(fault_server: FaultServer, target: str) -> None:
    fault_server.add("/a.xml", "<rss/>")
    fault_server.add("/ok.xml", "<rss>ok</rss>")
    to = target.format(port=fault_server.port)
    with guarded() as c:
        # the first hop is allowed (host "localhost"), proving the client itself works ...
        assert c.get(f"http://localhost:{fault_server.port}/ok.xml").body == b"<rss>ok</rss>"
        # ... and the redirect hop to a blocked address is refused before connecting
        with pytest.raises(BlockedAddress):
            c.get(f"http://localhost:{fault_server.port}/redirect?to={to}")
    assert fault_server.hits("/a.xml") == 0


def test_guard_checks_the_address_it_connects_to(fault_server: FaultServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that resolves to loopback at connect time is refused."""
    real = socket.getaddrinfo

    def rebinding(host, port, *a, **kw):  # type: ignore[no-untyped-def]
        if host == "feeds.example.com":
            return real("127.0.0.1", port, *a, **kw)
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    fault_server.add("/a.xml", "<rss/>")
    url = f"http://feeds.example.com:{fault_server.port}/a.xml"
    with Client(NetSettings(deadline_s=3.0)) as c, pytest.raises(BlockedAddress):
        c.get(url)
    assert fault_server.hits("/a.xml") == 0
    # with the guard off, the same name connects to the address it resolved to
    with Client(OPEN) as c:
        assert c.get(url).body == b"<rss/>"


def test_allow_private_networks_turns_the_guard_off(fault_server: FaultServer) -> None:
    fault_server.add("/a.xml", "<rss/>")
    with Client(OPEN) as c:
        assert c.get(fault_server.url("/a.xml")).status == 200
    with Client(NetSettings()) as c, pytest.raises(BlockedAddress):
        c.get(fault_server.url("/a.xml"))


def test_unresolvable_host_is_a_fetch_error() -> None:
    with Client(NetSettings(deadline_s=3.0)) as c, pytest.raises(FetchError):
        c.get("http://no-such-host.invalid/feed")


# --- per-host concurrency --------------------------------------------------------------------

def test_at_most_two_connections_per_host(fault_server: FaultServer) -> None:
    with Client(OPEN) as c:
        threads = [threading.Thread(target=c.get, args=(fault_server.url("/sleep?s=0.3"),))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert fault_server.hits("/sleep") == 6
    assert fault_server.max_in_flight == 2


def test_client_works_in_a_forked_child(fault_server: FaultServer) -> None:
    """Worker processes are forked: name lookups must not wait on the parent's resolver threads."""
    import os

    fault_server.add("/a.xml", "<rss/>")
    url = f"http://localhost:{fault_server.port}/a.xml"
    with Client(OPEN) as c:
        assert c.get(url).status == 200  # the parent's resolver pool now has an idle thread
        pid = os.fork()
        if pid == 0:  # child: exit status says whether the lookup and fetch worked
            try:
                with Client(OPEN) as fresh:  # a new pool: the lookup really happens
                    os._exit(0 if fresh.get(url).body == b"<rss/>" else 1)
            except BaseException:  # noqa: BLE001
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
