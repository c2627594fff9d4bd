"""Helpers shared by the web console's tests (tests/test_ui_*.py): routine documents, an httpx
client that signs in through the real form, and the CSRF token of a page."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')


def routine(name: str, *, cron: str | None = "30 2 * * *", timezone: str = "Europe/Prague",
            description: str | None = None, prompt: str = "check the backups", trigger: str = "schedule",
            **spec: Any) -> dict[str, Any]:
    trig: dict[str, Any] = {"kind": trigger}
    if trigger == "schedule":
        trig["schedule"] = {"cron": cron, "timezone": timezone}
    elif trigger == "hook":
        trig["event"] = f"{name}.poke"
    meta: dict[str, Any] = {"name": name}
    if description is not None:
        meta["description"] = description
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta,
            "spec": {"prompt": prompt, "trigger": trig, **spec}}


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def signed_in(base_url: str, token: str) -> httpx.Client:
    """A cookie-keeping client signed in through GET + POST /ui/login (no redirects followed)."""
    c = httpx.Client(base_url=base_url, follow_redirects=False, timeout=15)
    page = c.get("/ui/login")
    assert page.status_code == 200, page.text
    r = c.post("/ui/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/ui/"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/"
    return c
