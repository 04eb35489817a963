"""The console against a server without keys (``--no-auth``): no sign-in, same-origin
writes pass the Host/Origin checks. Its own module: one durable engine per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser_support import CI, chromium_missing
from console_support import console_service
from server_helpers import Api, wait_status

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> None:
    reason = chromium_missing()
    if reason is not None:
        if CI:
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


def test_keyless_server_needs_no_sign_in(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from loopwise.toolkits.browser import find_chromium

    with console_service(tmp_path, keys=[]) as live, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(live.url + "/")
        tab.wait_for_selector("#run-table", state="visible")
        assert tab.locator("#signin").is_hidden()
        run = Api(live.url).post("/v1/runs", {"agent": "gated", "input": "go"}).json()
        tab.locator("#approval-list .approval").filter(has_text=run["id"]).get_by_role(
            "button", name="Approve", exact=True
        ).click()
        assert wait_status(Api(live.url), run["id"], "completed")["output"].startswith("Result:")
        slow = Api(live.url).post("/v1/runs", {"agent": "slow", "input": "go"}).json()
        tab.goto(f"{live.url}/#run={slow['id']}")
        tab.wait_for_selector("#timeline li[data-type=tool_call]")
        tab.get_by_role("button", name="Cancel run").click()
        assert wait_status(Api(live.url), slow["id"], "cancelled")["status"] == "cancelled"
        context.close()
        browser.close()
