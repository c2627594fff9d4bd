"""The web console in a real headless browser (issue 13's acceptance): Debian's Chromium driven by
Playwright (`executable_path`, never a downloaded browser), against the real daemon with `--watch`.

One daemon and one browser for the module; each test has its own browser context (its own cookies).
Waits are Playwright's auto-waiting `expect` with generous timeouts, so a loaded machine makes the
tests slower, not flaky. The same run takes the screenshots of docs/console.md; they land in docs/img/
when `PALYRA_UPDATE_SCREENSHOTS=1` (`make screenshots`) and in a temp dir otherwise, so a test run
leaves the checkout clean.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DaemonHandle, start_daemon
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from ui_console import routine

expect.set_options(timeout=30_000)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
UPDATE_SCREENSHOTS = os.environ.get("PALYRA_UPDATE_SCREENSHOTS") == "1"
XSS = '<script>window.__pwned = 1; document.title = "pwned"</script>'
WAIT_MS = 30_000  # per wait (the expect default is 5 s)
PAGES = ["/ui/", "/ui/routines/beat", "/ui/timeline", "/ui/sync", "/ui/approvals", "/ui/system"]
BROKEN = """apiVersion: palyra/v1
kind: Routine
metadata: {name: broken}
spec:
  prompt: will not load
  trigger:
    kind: schedule
    schedule: {cron: "61 * * * *"}
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHandle]:
    h = start_daemon(tmp_path_factory.mktemp("ui-browser"), extra_args=["--watch", "--rescan-interval", "1s"])
    try:
        herd = [routine(f"report-{i:02d}", cron="0 * * * *", timezone="utc", description=f"hourly report {i}")
                for i in range(6)]
        h.write("ops.yaml", yaml.safe_dump_all([
            routine("beat", description="nightly backup check"),
            routine("evil", description=XSS, prompt=XSS),
            routine("gated", approval="before_enable", description="needs a human first"),
            *herd,
        ], sort_keys=False))
        h.write("broken.yaml", BROKEN)
        api = h.client()
        h.wait_for(lambda: len(api.get("/console/v1/routines").json()["items"]) == 9, timeout=30,
                   what="the watcher to apply ops.yaml")
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(WAIT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(page: Page, d: DaemonHandle, path: str = "/ui/") -> None:
    page.goto(d.base_url + path)
    expect(page).to_have_url(f"{d.base_url}/ui/login?next={path.replace('/', '%2F')}")
    page.fill("#token", d.token)
    page.click("button[type=submit]")
    expect(page).to_have_url(d.base_url + path)


_SCRATCH_IMG = Path(tempfile.mkdtemp(prefix="palyra-ui-shots-"))


def shot(page: Page, name: str) -> None:
    """Every run takes the picture (a page that cannot render fails here); only an explicit update
    writes docs/img, because the pictures hold times and would dirty every checkout."""
    target = (DOCS_IMG if UPDATE_SCREENSHOTS else _SCRATCH_IMG) / f"console-{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2_000, target


def api(d: DaemonHandle, path: str) -> Any:
    return d.client().get("/console/v1" + path).json()


def test_sign_in_and_see_a_routines_next_run(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    page.goto(d.base_url + "/ui/login")
    shot(page, "login")
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("not this daemon's API token")
    sign_in(page, d)
    beat = api(d, "/routines/beat")
    row = page.locator('tr[data-routine="beat"]')
    local, utc = beat["next_run_at_local"], beat["next_run_at"]
    expect(row.locator('[data-field="next-local"]')).to_have_text(f"{local[:10]} {local[11:19]} {local[-6:]}")
    expect(row.locator('[data-field="next-utc"]')).to_have_text(f"{utc[:10]} {utc[11:19]} UTC")
    expect(row).to_contain_text("Pending")
    expect(page.locator('tr[data-routine="gated"]')).to_contain_text("approval pending")
    shot(page, "routines")
    # the filters narrow the list without a script
    page.select_option('select[name="state"]', "Disabled")
    page.click("form.filters button")
    expect(page.locator("tr[data-routine]")).to_have_count(1)
    expect(page.locator('tr[data-routine="gated"]')).to_be_visible()


def test_run_now_appears_live_without_a_reload(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    sign_in(page, d, "/ui/routines/beat")
    expect(page.locator("#upcoming tbody tr")).to_have_count(10)
    expect(page.locator("#run-rows")).to_contain_text("No runs yet.")
    page.evaluate("window.__sameDocument = true")
    page.click("#run-now")
    expect(page.locator("#flash")).to_contain_text("of beat: ")
    rows = page.locator("#run-rows tr[data-run]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("manual")
    expect(rows.first).to_contain_text("succeeded")
    expect(page.locator("#routine-state")).to_contain_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True  # no navigation: the row arrived live
    [run] = d.runs("beat")
    assert run["trigger_kind"] == "manual" and run["status"] == "succeeded"
    expect(rows.first).to_have_attribute("data-run", run["run_id"])
    shot(page, "routine")

    # the routines list follows runs too: a run started elsewhere shows up in place
    page.goto(d.base_url + "/ui/?trigger_kind=schedule")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator('tr[data-routine="report-00"]')).not_to_contain_text("succeeded")
    r = d.client().post("/console/v1/routines/dispatch", json={"routine_id": "report-00"})
    assert r.status_code == 202
    expect(page.locator('tr[data-routine="report-00"]')).to_contain_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True


def test_approve_a_pending_approval(context: BrowserContext, d: DaemonHandle) -> None:
    [pending] = api(d, "/approvals")["items"]
    assert pending["routine_id"] == "gated" and pending["kind"] == "before_enable"
    page = context.new_page()
    sign_in(page, d, "/ui/approvals")
    row = page.locator(f'tr[data-approval="{pending["approval_id"]}"]')
    expect(row).to_contain_text("before_enable")
    shot(page, "approvals")
    row.locator("button.approve").click()
    expect(page.locator("#flash")).to_contain_text(f"Approval {pending['approval_id']} (gated, before_enable) approved")
    expect(page.locator("#approval-rows")).to_contain_text("Nothing waits for a decision.")
    expect(page.locator("#decided")).to_contain_text("approved")
    decided = d.client().get("/console/v1/approvals", params={"state": "all"}).json()["items"]
    assert [(a["approval_id"], a["state"], a["decided_by"]) for a in decided] == [
        (pending["approval_id"], "approved", "console")]
    assert api(d, "/routines/gated")["effective_enabled"] is True


def test_pause_with_a_note_then_resume(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    sign_in(page, d, "/ui/routines/report-01")
    page.fill('input[name="note"]', "db <migration>")
    page.click("#pause")
    expect(page.locator("#flash")).to_contain_text("report-01 paused")
    expect(page.locator("#routine-state .badge.paused")).to_be_visible()
    expect(page.locator("#routine-state")).to_contain_text("db <migration>")  # escaped, shown as text
    view = api(d, "/routines/report-01")
    assert view["paused"] is True and view["pause"]["note"] == "db <migration>" and view["pause"]["by"] == "console"
    page.goto(d.base_url + "/ui/?trigger_kind=schedule")
    expect(page.locator('tr[data-routine="report-01"] .badge.paused')).to_be_visible()
    page.goto(d.base_url + "/ui/routines/report-01")
    page.click("#resume")
    expect(page.locator("#flash")).to_contain_text("report-01 resumed")
    expect(page.locator("#routine-state .badge.paused")).to_have_count(0)
    assert api(d, "/routines/report-01")["pause"] is None


def test_a_form_without_its_csrf_token_is_refused(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    sign_in(page, d, "/ui/routines/report-01")
    form = page.locator('form[action$="/routines/report-01/disable"]')
    form.locator('input[name="csrf"]').evaluate("el => el.remove()")
    with page.expect_response(lambda r: r.url.endswith("/disable")) as answer:
        form.locator("button").click()
    assert answer.value.status == 403
    expect(page.locator(".error-message")).to_contain_text("CSRF token is missing or wrong: nothing was changed")
    assert api(d, "/routines/report-01")["effective_enabled"] is True
    assert d.runs("report-01") == []


def test_a_script_in_a_description_renders_as_text(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, d, "/ui/routines/evil")
    expect(page.locator("#description")).to_have_text(XSS)
    expect(page.locator('pre#definition')).to_contain_text("<script>window.__pwned = 1;")
    page.goto(d.base_url + "/ui/")
    expect(page.locator('tr[data-routine="evil"] .desc')).to_have_text(XSS)
    assert page.evaluate("window.__pwned") is None
    assert page.title() != "pwned" and dialogs == []


def test_other_pages_and_their_screenshots(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    sign_in(page, d, "/ui/timeline")
    expect(page.locator("svg#timeline rect.bar").first).to_be_visible()
    # six routines due at the top of every hour: a herd, marked in the picture and listed
    expect(page.locator("#herds")).to_contain_text("report-00")
    expect(page.locator("svg#timeline rect.bar.herd").first).to_be_visible()
    shot(page, "timeline")
    page.goto(d.base_url + "/ui/sync")
    expect(page.locator("#sync-state")).to_have_text("Invalid")
    expect(page.locator("#sync-files")).to_contain_text("broken.yaml:8:")
    shot(page, "sync")
    page.goto(d.base_url + "/ui/system")
    expect(page.locator("#scheduler")).to_contain_text("Due backlog")
    expect(page.locator("#tasks")).to_contain_text("memory.maintain")
    shot(page, "system")


def test_signed_out_every_page_goes_to_sign_in(context: BrowserContext, d: DaemonHandle) -> None:
    page = context.new_page()
    sign_in(page, d)
    page.click("form.signout button")
    expect(page).to_have_url(d.base_url + "/ui/login")
    for path in PAGES:
        page.goto(d.base_url + path)
        expect(page).to_have_url(f"{d.base_url}/ui/login?next={path.replace('/', '%2F')}")
        expect(page.locator("#token")).to_be_visible()
