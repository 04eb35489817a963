"""The web console in a real browser (Playwright driving Debian's Chromium) against the real
service: sign in, watch a run, approve / reject with a reason / edit arguments, cancel; and
every text a run carries (thought, arguments, observation, answer) stays text."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_support import CI, chromium_missing
from console_support import PAYLOADS, console_service
from figures import figure
from server_helpers import KEY, Api, LiveServer, wait_for, wait_status

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
ARTIFACTS = Path(os.environ.get("LOOPWISE_TEST_ARTIFACTS", "test-artifacts")) / "console"
INJECTED = "img[src='x'], svg, iframe, #evil, #bold, style, main script, a[href^='javascript']"


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> None:
    reason = chromium_missing()
    if reason is not None:
        if CI:
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with console_service(tmp_path_factory.mktemp("console"), keys=[KEY]) as live:
        yield live


@pytest.fixture
def api(server: LiveServer) -> Api:
    return Api(server.url, KEY)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from loopwise.toolkits.browser import find_chromium

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    started = time.perf_counter()
    tab.goto(server.url + "/")
    tab.fill("#key", KEY)
    tab.click("#signin-form button[type=submit]")
    tab.wait_for_selector("#run-table", state="visible")
    tab.load_ms = (time.perf_counter() - started) * 1000
    yield tab
    context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def card(page: Any, run_id: str) -> Any:
    found = page.locator("#approval-list .approval").filter(has_text=run_id)
    found.wait_for(state="visible", timeout=15_000)
    return found


def assert_inert(page: Any) -> int:
    """Nothing a run said ran or became an element; returns how many checks held."""
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []
    assert page.locator(INJECTED).count() == 0
    assert page.evaluate("document.scripts.length") == 1
    return 1


def test_console_files_are_public_but_the_api_is_not(server: LiveServer) -> None:
    def get(path: str, host: str | None = None) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(server.url + path, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:
            return err.code, {}

    status, headers = get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert get("/console/console.js")[1]["content-type"].startswith("text/javascript")
    for path in (
        "/v1/runs",
        "/console/../v1/runs",
        "/console/app.py",
        "/console/x",
        "/openapi.json",
    ):
        assert get(path)[0] == 401, path
    assert get("/", host="evil.example")[0] in (400, 403, 421)  # the Host check still comes first


def test_approve_a_hostile_run_by_clicking(page: Any, api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "hostile", "input": "read " + PAYLOADS[4]}).json()
    asked = time.perf_counter()
    approval = card(page, run["id"])
    shown_ms = (time.perf_counter() - asked) * 1000
    assert PAYLOADS[0] in approval.locator(".thought").inner_text()
    assert PAYLOADS[3] in approval.locator(".arguments").inner_text()
    checks = assert_inert(page)
    shot(page, "runs")
    page.click(f"a[href='#run={run['id']}']")
    page.wait_for_selector("#timeline li[data-type=tool_result]")
    page.locator("#timeline details summary").first.click()
    assert PAYLOADS[1] in page.locator("#timeline details pre").first.inner_text()
    checks += assert_inert(page)
    shot(page, "run-waiting")
    card(page, run["id"]).get_by_role("button", name="Approve", exact=True).click()
    page.wait_for_selector("#timeline li[data-type=run_finished] >> text=Run completed")
    assert wait_status(api, run["id"], "completed")["decisions"][0]["approve"] is True
    answer = page.locator("#timeline li[data-type=model_text]").last.inner_text()
    assert all(p in answer for p in PAYLOADS)
    checks += assert_inert(page)
    shot(page, "run-completed")
    figure(
        f"console: page load + sign-in {page.load_ms:.0f} ms; pending approval shown "
        f"{shown_ms:.0f} ms after the run was submitted (list refresh 2 s)"
    )
    figure(
        f"console XSS: {len(PAYLOADS)} markup payloads x 5 places (input, thought, arguments, "
        f"observation, answer), {checks} page checks: {checks} held (nothing ran or rendered)"
    )


def test_reject_needs_a_reason_and_records_it(page: Any, api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "gated", "input": "go"}).json()
    approval = card(page, run["id"])
    approval.get_by_role("button", name="Reject").click()
    assert "Give a reason" in approval.locator(".decision-error").inner_text()
    approval.get_by_label("Reason (needed to reject)").fill("not that file")
    approval.get_by_role("button", name="Reject").click()
    done = wait_status(api, run["id"], "completed")
    assert done["decisions"][0]["approve"] is False
    assert done["decisions"][0]["reason"] == "not that file"
    assert "rejected" in str(done["output"])


def test_edited_arguments_are_checked_by_the_server(page: Any, api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "gated", "input": "go"}).json()
    approval = card(page, run["id"])
    approval.get_by_role("button", name="Edit arguments").click()
    editor = approval.get_by_label("Edited arguments (JSON)")
    send = approval.get_by_role("button", name="Approve with these arguments")
    alert = approval.locator(".decision-error")
    editor.fill('{"path": 5}')
    send.click()
    wait_for(lambda: alert.inner_text(), what="the server's refusal")
    assert "invalid arguments for tool 'delete_file'" in alert.inner_text()
    assert "\n" not in alert.inner_text()
    shot(page, "edit-refused")
    for bad in ("{", "[1]", "null"):
        editor.fill(bad)
        send.click()
        assert "JSON" in alert.inner_text()
    assert wait_status(api, run["id"], "input_required")["decisions"] == []
    editor.fill('{"path": "other.txt"}')
    send.click()
    assert wait_status(api, run["id"], "completed")["output"] == "Result: deleted other.txt"


def test_start_and_cancel_a_run_from_the_console(page: Any, api: Api) -> None:
    page.select_option("#start-agent", "slow")
    page.fill("#start-input", "wait a while")
    page.click("#start-form button[type=submit]")
    page.wait_for_selector("#timeline li[data-type=tool_call]")
    run_id = page.evaluate("decodeURIComponent(location.hash.slice(5))")
    page.get_by_role("button", name="Cancel run").click()
    assert wait_status(api, run_id, "cancelled")["status"] == "cancelled"
    page.wait_for_selector("#run-summary dd >> text=cancelled")


def test_child_runs_nest_and_tool_calls_stream_into_an_open_page(page: Any, api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "team", "input": "go"}).json()
    page.goto(page.url.split("#")[0] + "#run=" + run["id"])
    page.wait_for_selector("#timeline li[data-type=run_finished] >> text=Run completed")
    child = page.locator("#timeline li.child")
    assert child.count() == 1 and f"{run['id']}." in child.locator("p.kind").first.inner_text()
    assert PAYLOADS[2] in child.locator("li[data-type=model_text]").inner_text()
    assert_inert(page)
    shot(page, "run-with-child")
    # latency: a tool call's event time -> its row in an already open page
    slow = api.post("/v1/runs", {"agent": "slow", "input": "go"}).json()
    page.goto(page.url.split("#")[0] + "#run=" + slow["id"])
    page.evaluate(
        """() => { window.__seen = []; new MutationObserver((ms) => { for (const m of ms)
        for (const n of m.addedNodes) if (n.dataset && n.dataset.type === "tool_call")
        window.__seen.push(Date.now() - Number(n.dataset.time) * 1000); })
        .observe(document.getElementById("timeline"), {childList: true, subtree: true}); }"""
    )
    wait_for(lambda: len(page.evaluate("window.__seen")) >= 6, what="six live tool calls")
    api.post(f"/v1/runs/{slow['id']}/cancel")
    seen = sorted(page.evaluate("window.__seen"))[1:]  # the first may be a replayed one
    figure(
        f"console: tool call -> row in an open run page: median {seen[len(seen) // 2]:.0f} ms, "
        f"max {seen[-1]:.0f} ms ({len(seen)} calls, SSE over fetch)"
    )


def test_docs_work_offline(browser: Any, server: LiveServer) -> None:
    pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")
    assert Api(server.url).get("/docs").status == 401  # still behind the key
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {KEY}"})
    hosts: list[str] = []
    context.on("request", lambda r: hosts.append(r.url.split("/")[2]))
    tab = context.new_page()
    tab.goto(server.url + "/docs")
    tab.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert tab.locator(".swagger-ui .opblock").count() >= 8
    assert set(hosts) == {server.url.split("/")[2]}, hosts  # nothing from a CDN
    shot(tab, "docs")
    context.close()


def test_phone_sized_screen_and_keyboard(browser: Any, server: LiveServer, api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "hostile", "input": "go"}).json()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    tab = context.new_page()
    tab.goto(server.url + "/")
    tab.fill("#key", KEY)
    tab.keyboard.press("Enter")  # the form submits from the keyboard
    approval = card(tab, run["id"])
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390
    shot(tab, "phone")
    approval.get_by_role("button", name="Approve", exact=True).focus()
    tab.keyboard.press("Enter")
    assert wait_status(api, run["id"], "completed")["decisions"][0]["approve"] is True
    context.close()


def test_hostile_links_to_the_console_stay_on_runs(page: Any, server: LiveServer) -> None:
    """A crafted #run= link cannot steer the console's keyed requests to another path."""
    paths: list[str] = []
    page.on("request", lambda r: paths.append(r.url.split(server.url, 1)[-1]))
    links = ["../agents", "..%2F..%2Fv1%2Fagents", "%E0%A4%A", "x?limit=1", "x#y", "/%2e%2e/docs"]
    for link in links:
        page.goto(f"{server.url}/#run={link}")
        page.wait_for_timeout(300)
    allowed = re.compile(r"^/v1/(agents|runs\?[^/]*|runs/[^/?#.][^/?#]*(/events\?after=0)?)$")
    stray = [p for p in paths if p.startswith("/v1/") and not allowed.match(p)]
    assert stray == [], stray
    figure(f"console links: {len(links)} crafted #run= links, {len(links)} held")


def test_filters_narrow_the_list(page: Any, api: Api) -> None:
    done = api.post("/v1/runs", {"agent": "counting", "input": "go"}).json()
    wait_status(api, done["id"], "completed")
    page.select_option("#filter-status", "completed")
    page.select_option("#filter-agent", "counting")
    page.wait_for_selector(f"#run-table tr[data-run-id='{done['id']}']")
    wait_for(
        lambda: (
            page.locator("#run-table tbody tr").count()
            == len(api.get("/v1/runs?status=completed&agent=counting").json()["data"])
        ),
        what="the filtered list",
    )
    rows = page.locator("#run-table tbody tr").all_inner_texts()
    assert rows and all("completed" in r and "counting" in r for r in rows)
