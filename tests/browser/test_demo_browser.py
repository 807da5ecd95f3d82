"""`evidence demo --serve` in a real browser: the demo's printed login signs in with Chromium, and
the desk it starts listens on 127.0.0.1 only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_demo_summary import QWEN, demo_served, listening_addresses
from tests.web_support import type_into_login

pytestmark = pytest.mark.browser


def test_demo_login_in_chromium(browser, tmp_path):
    with demo_served(tmp_path) as (url, password, port):
        if Path("/proc/net/tcp").exists():
            assert listening_addresses(port) == {"127.0.0.1"}
        ctx = browser.new_context(base_url=url)
        page = ctx.new_page()
        page.goto("/queue")
        assert "/login" in page.url
        type_into_login(page, "demo", password + "x")
        page.wait_for_selector("p.error")
        assert "/login" in page.url and "wrong name or password" in page.content()
        page.fill("input[name=name]", "demo")
        page.fill("input[name=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url("**/queue")
        # the demo's 25 scripted labels are in the queue, the Qwen pair among them
        assert page.locator("a.item-link", has_text=re.compile("Qwen 4 ties")).count() == 1
        page.locator("a.item-link", has_text=QWEN).click()
        page.wait_for_url("**/item/*")
        assert "oss-parity" in page.content()
        ctx.close()
