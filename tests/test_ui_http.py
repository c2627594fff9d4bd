"""The web console at the HTTP level (SPEC §13): security headers, the session cookie's flags,
sign-in/sign-out, CSRF on every form, escaping, redirects when signed out, and that its list and
API agree. One real daemon for the module (its state is only added to, never reset)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DaemonHandle, start_daemon
from ui_console import csrf_of, routine, signed_in

PAGES = ["/ui/", "/ui/routines/beat", "/ui/timeline", "/ui/sync", "/ui/approvals", "/ui/system",
         "/ui/live/routines", "/ui/live/routines/beat/runs", "/ui/live/routines/beat/state", "/ui/live/approvals",
         "/ui/?state=Pending", "/ui/routines/nope"]
FORMS = ["/ui/routines/beat/run", "/ui/routines/beat/disable", "/ui/routines/beat/enable", "/ui/logout"]
XSS = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonHandle]:
    h = start_daemon(tmp_path_factory.mktemp("ui-http"))
    try:
        h.write("routines.yaml", [
            routine("beat", description="nightly backup check"),
            routine("evil", description=XSS, prompt=XSS),
            routine("hooked", trigger="hook", channel="ops"),
            routine("every", cron=None, trigger="manual"),
        ])
        h.apply()
        yield h
    finally:
        h.stop()


@pytest.fixture
def c(d: DaemonHandle) -> Iterator[httpx.Client]:
    client = signed_in(d.base_url, d.token)
    yield client
    client.close()


def anonymous(d: DaemonHandle) -> httpx.Client:
    return httpx.Client(base_url=d.base_url, follow_redirects=False, timeout=15)


def test_signed_out_every_page_redirects_to_sign_in(d: DaemonHandle) -> None:
    with anonymous(d) as a:
        for path in PAGES:
            r = a.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith("/ui/login?next=%2Fui%2F"), (path, r.headers["location"])
        for path in FORMS:
            r = a.post(path, data={"csrf": "x"})
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), path
        assert a.get("/ui").headers["location"] == "/ui/"
        # the login page and the assets are public; the API still wants its bearer token
        assert a.get("/ui/login").status_code == 200
        assert a.get("/ui/static/console.js").status_code == 200
        assert a.get("/console/v1/routines").status_code == 401
    assert d.runs("beat") == []


def test_security_headers_on_every_answer(d: DaemonHandle, c: httpx.Client) -> None:
    with anonymous(d) as a:
        answers = [a.get("/ui/login"), a.get("/ui/"), a.get("/ui/static/console.css"), c.get("/ui/"),
                   c.get("/ui/routines/nope"), c.post("/ui/routines/beat/disable", data={})]
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert answers[3].headers["cache-control"] == "no-store"
    assert answers[4].status_code == 404 and "no routine &#39;nope&#39;" in answers[4].text
    # no inline script or style anywhere on the pages
    for path in PAGES[:6]:
        body = c.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), path
        assert " style=" not in body and "<style" not in body and "onclick" not in body, path


def test_session_cookie_flags_and_sign_out(d: DaemonHandle) -> None:
    with anonymous(d) as a:
        page = a.get("/ui/login")
        login_cookie = page.headers["set-cookie"]
        assert "HttpOnly" in login_cookie and "SameSite=strict" in login_cookie and "Path=/ui" in login_cookie
        r = a.post("/ui/login", data={"csrf": csrf_of(page.text), "token": d.token, "next": "/ui/system"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/system"
        session = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("palyra_ui_session=")]
        assert len(session) == 1
        flags = [f.strip().lower() for f in session[0].split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert not any(f.startswith(("max-age", "expires")) for f in flags)  # ends with the browser
        sid = a.cookies.get("palyra_ui_session")
        assert sid and sid != d.token and d.token not in session[0]
        home = a.get("/ui/")
        assert home.status_code == 200
        r = a.post("/ui/logout", data={"csrf": csrf_of(home.text)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        # the old cookie is dead on the server, not just deleted in this client
        with anonymous(d) as b:
            b.cookies.set("palyra_ui_session", sid, path="/ui")
            assert b.get("/ui/").status_code == 303


def test_sign_in_refuses_wrong_token_and_missing_login_csrf(d: DaemonHandle) -> None:
    with anonymous(d) as a:
        page = a.get("/ui/login")
        csrf = csrf_of(page.text)
        r = a.post("/ui/login", data={"csrf": csrf, "token": "not-the-token"})
        assert r.status_code == 401 and "not this daemon&#39;s API token" in r.text
        assert "palyra_ui_session" not in a.cookies
        r = a.post("/ui/login", data={"token": d.token})
        assert r.status_code == 403 and "CSRF token is missing or wrong" in r.text
        r = a.post("/ui/login", data={"csrf": "0" * 64, "token": d.token})
        assert r.status_code == 403
        assert "palyra_ui_session" not in a.cookies
    with anonymous(d) as b:  # another browser's login form token is not this one's
        b.get("/ui/login")
        assert b.post("/ui/login", data={"csrf": csrf, "token": d.token}).status_code == 403


def test_sign_in_never_redirects_off_the_console(d: DaemonHandle) -> None:
    for target in ["https://evil.example/", "//evil.example/ui/", "/console/v1/routines", "/ui\\@evil"]:
        with anonymous(d) as a:
            page = a.get("/ui/login")
            r = a.post("/ui/login", data={"csrf": csrf_of(page.text), "token": d.token, "next": target})
            assert r.headers["location"] == "/ui/", target


def test_csrf_refused_forms_change_nothing(d: DaemonHandle, c: httpx.Client) -> None:
    before = c.get("/ui/routines/beat")
    token = csrf_of(before.text)
    api = d.client()
    for data in ({}, {"csrf": ""}, {"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}):
        r = c.post("/ui/routines/beat/disable", data=data)
        assert r.status_code == 403, data
        assert "CSRF token is missing or wrong: nothing was changed" in r.text
    r = c.post("/ui/routines/beat/run", content=b'{"csrf": "%s"}' % token.encode(),
               headers={"content-type": "application/json"})
    assert r.status_code == 403
    r = c.post("/ui/routines/beat/disable", data={"csrf": token}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    assert api.get("/console/v1/routines/beat").json()["effective_enabled"] is True
    assert d.runs("beat") == []
    # the same form with its token works
    r = c.post("/ui/routines/beat/disable", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/ui/routines/beat"
    assert api.get("/console/v1/routines/beat").json()["effective_enabled"] is False
    page = c.get("/ui/routines/beat")
    assert "beat disabled" in page.text  # the flash, once
    assert "beat disabled" not in c.get("/ui/routines/beat").text
    assert c.post("/ui/routines/beat/enable", data={"csrf": token}).status_code == 303
    assert api.get("/console/v1/routines/beat").json()["effective_enabled"] is True


def test_values_from_routines_are_escaped(c: httpx.Client, d: DaemonHandle) -> None:
    assert c.post("/ui/routines/evil/run", data={"csrf": csrf_of(c.get("/ui/").text)}).status_code == 303
    d.wait_for(lambda: [r for r in d.runs("evil") if r["status"] == "succeeded"], what="evil's run")
    for path in ["/ui/", "/ui/routines/evil", "/ui/live/routines/evil/runs"]:
        body = c.get(path).text
        assert "<script>document.title" not in body and "<img src=x" not in body, path
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in body, path


def test_list_filters_match_the_api(c: httpx.Client, d: DaemonHandle) -> None:
    api = d.client()

    def ui_names(query: str) -> list[str]:
        return re.findall(r'<tr data-routine="([^"]+)"', c.get("/ui/" + query).text)

    def api_names(query: str) -> list[str]:
        return [r["name"] for r in api.get("/console/v1/routines" + query).json()["items"]]

    assert ui_names("") == api_names("") == ["beat", "every", "evil", "hooked"]
    assert ui_names("?trigger_kind=hook") == api_names("?trigger_kind=hook") == ["hooked"]
    assert ui_names("?channel=ops") == api_names("?channel=ops") == ["hooked"]
    assert ui_names("?state=Finalized") == ["every", "hooked"]
    assert ui_names("?state=Pending&trigger_kind=schedule") == ["beat", "evil"]
    # paging by name, like the API's cursor
    first = c.get("/ui/?limit=3").text
    assert re.findall(r'<tr data-routine="([^"]+)"', first) == ["beat", "every", "evil"]
    assert 'href="/ui/?limit=3&amp;after=evil"' in first
    assert ui_names("?limit=3&after=evil") == ["hooked"]
    r = c.get("/ui/?state=Sleeping")
    assert r.status_code == 400 and "state: &#39;Sleeping&#39; is not one of" in r.text


def test_routine_page_shows_next_run_definition_and_dst_notes(c: httpx.Client, d: DaemonHandle) -> None:
    api = d.client().get("/console/v1/routines/beat").json()
    body = c.get("/ui/routines/beat").text
    local = api["next_run_at_local"].replace("T", " ")
    assert local[:19] in body and api["next_run_at"].replace("T", " ")[:19] in body
    assert "cron: 30 2 * * *" in body and "timezone: Europe/Prague" in body
    assert "routines.yaml" in body and "managed" in body
    preview = d.client().post("/console/v1/routines/schedule-preview", json={
        "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}, "count": 10}).json()
    for note in preview["notes"]:
        assert note.replace("'", "&#39;") in body
    assert body.count("<tr><td class=\"time\">") == 10


def test_live_fragment_answers_304_while_unchanged(c: httpx.Client) -> None:
    r = c.get("/ui/live/routines/beat/runs")
    assert r.status_code == 200 and r.headers["etag"]
    again = c.get("/ui/live/routines/beat/runs", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_wheel_ships_templates_and_assets() -> None:
    ui = Path(__file__).resolve().parent.parent / "palyra_ops" / "server" / "ui"
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"palyra_ops.server.ui" = ["templates/*.html", "static/*"]' in text
    assert (ui / "static" / "console.js").is_file() and (ui / "templates" / "base.html").is_file()
    for f in (ui / "templates").iterdir():  # no CDN: nothing loaded from another origin
        assert "http://" not in f.read_text() and "https://" not in f.read_text(), f.name
