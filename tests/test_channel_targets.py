"""Where deliveries may go (SPEC §2 Channel, docs/security.md), enforced when the delivery happens.

Channels go into the journal directly here (as if applied before these rules existed), so what is
tested is the delivery-time enforcement, not validation: file channels stay in the delivery
directory without following symlinks; webhooks never reach metadata or link-local addresses, also
when a host *name* resolves to one (the resolver is the edge of the world, replaced here); header
values cannot split the request; signed deliveries verify with the reference Standard Webhooks code.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from palyra_ops.targets import address_problem, path_problems, url_problems

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


async def deliver(rt: Any, channel: dict[str, Any], name: str = "r") -> dict[str, Any]:
    rt.put("Channel", f"{name}-ch", channel)
    rt.routine(name, delivery={"mode": "specific_channel", "channel": f"{name}-ch"})
    r = await rt.gateway.dispatch(name)
    await rt.gateway.drain()
    return rt.journal.get_run(r["run_id"])


def test_file_channels_write_under_the_delivery_directory(runtime_factory, tmp_path: Path) -> None:
    root = tmp_path / "deliveries"
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")

    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.deliverer.file_root = root
        ok = await deliver(rt, {"type": "file", "path": "team/out.jsonl"}, "rel")
        assert ok["delivery_status"] == "delivered"
        written = root / "team" / "out.jsonl"
        assert json.loads(written.read_text())["run_id"] == ok["run_id"]
        assert stat.S_IMODE(written.stat().st_mode) == 0o600 and stat.S_IMODE((root / "team").stat().st_mode) == 0o700
        inside_abs = await deliver(rt, {"type": "file", "path": str(root / "abs.jsonl")}, "abs")
        assert inside_abs["delivery_status"] == "delivered" and (root / "abs.jsonl").exists()

        cases = {
            "escape": ({"type": "file", "path": str(outside)}, "outside the delivery directory"),
            "dotdot": ({"type": "file", "path": "../outside.txt"}, "must not contain '..'"),
            "passwd": ({"type": "file", "path": "/etc/passwd"}, "outside the delivery directory"),
            "proc": ({"type": "file", "path": "/proc/self/mem"}, "kernel or device filesystem"),
        }
        os.symlink(outside, root / "link.jsonl")
        os.symlink(tmp_path, root / "linkdir")
        os.mkfifo(root / "fifo")
        os.link(outside, root / "hard.jsonl")
        cases |= {
            "symlink": ({"type": "file", "path": "link.jsonl"}, "is a symlink"),
            "symlinked dir": ({"type": "file", "path": "linkdir/outside.txt"}, "'linkdir' is a symlink or not a directory"),
            "fifo": ({"type": "file", "path": "fifo"}, "not a regular file"),
            "hard link": ({"type": "file", "path": "hard.jsonl"}, "has more than one hard link"),
            "directory": ({"type": "file", "path": "team"}, "not a regular file"),
        }
        for i, (name, (spec, why)) in enumerate(cases.items()):
            run = await deliver(rt, spec, f"bad{i}")
            assert run["status"] == "succeeded" and run["delivery_status"] == "failed", name
            assert why in run["delivery_error"], (name, run["delivery_error"])
        assert outside.read_text() == "precious\n"

    asyncio.run(main())


def test_webhook_targets_are_checked_on_every_resolved_address(runtime_factory, receiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    answers = {"meta.test": ["169.254.169.254"], "ll.test": ["169.254.10.20"], "mixed.test": ["127.0.0.1", "fe80::1"],
               "local.test": ["127.0.0.1"], "mcast.test": ["224.0.0.1"]}
    asked: list[str] = []

    async def resolver(host: str, p: int) -> list[str]:
        asked.append(host)
        return answers[host]

    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.deliverer.resolver = resolver
        refused = {
            "http://meta.test/x": "meta.test resolves to 169.254.169.254, a cloud instance-metadata address",
            "http://ll.test/x": "a link-local address (allowed only with delivery.allow_link_local_targets",
            "http://mixed.test/x": "mixed.test resolves to fe80::1, a link-local address",
            "http://mcast.test/x": "a multicast address",
            "http://169.254.169.254/latest": "169.254.169.254 is a cloud instance-metadata address",
            "http://169.254.1.1/x": "169.254.1.1 is a link-local address",
            "http://[fe80::1]:8080/x": "fe80::1 is a link-local address",
            "http://user:pw@local.test/x": "must not carry credentials",
            "ftp://local.test/x": "only http and https",
        }
        for i, (url, why) in enumerate(refused.items()):
            run = await deliver(rt, {"type": "webhook", "url": url, "retries": 2}, f"w{i}")
            assert run["delivery_status"] == "failed" and why in run["delivery_error"], (url, run["delivery_error"])
        assert receiver.bodies == []
        # a name that resolves to an allowed address is connected to at that address
        ok = await deliver(rt, {"type": "webhook", "url": f"http://local.test:{port}/hook"}, "good")
        assert ok["delivery_status"] == "delivered", ok["delivery_error"]
        assert receiver.headers[-1]["Host"] == f"local.test:{port}" and receiver.bodies[-1]["run_id"] == ok["run_id"]
        assert asked.count("meta.test") == 1  # a refused target is not retried

    asyncio.run(main())


def test_header_values_cannot_split_the_request_and_are_not_echoed(runtime_factory, receiver, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "Bearer abc\r\nX-Injected: 1")

    async def main() -> None:
        rt = runtime_factory(T0)
        run = await deliver(rt, {"type": "webhook", "url": receiver.url, "headers": {"Authorization": {"env": "HOOK_TOKEN"}}})
        assert run["delivery_status"] == "failed"
        assert run["delivery_error"] == "header Authorization: header values must not contain CR, LF or NUL"
        lit = await deliver(rt, {"type": "webhook", "url": receiver.url, "headers": {"X-A": "b\nc"}}, "lit")
        assert lit["delivery_error"] == "header X-A: header values must not contain CR, LF or NUL"
        assert receiver.bodies == []

    asyncio.run(main())


def test_signed_deliveries_verify_with_the_reference_implementation(runtime_factory, receiver, monkeypatch) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    monkeypatch.setenv("HOOK_SIGNING_SECRET", SECRET)

    async def main() -> None:
        rt = runtime_factory(datetime.now(UTC))  # the reference verifier checks the timestamp on the wall clock
        spec = {"type": "webhook", "url": receiver.url, "signing_secret": {"env": "HOOK_SIGNING_SECRET"}, "retries": 1}
        run = await deliver(rt, spec)
        assert run["delivery_status"] == "delivered", run["delivery_error"]
        headers = {k.lower(): v for k, v in receiver.headers[-1].items()}
        assert headers["webhook-id"] == run["run_id"]
        assert int(headers["webhook-timestamp"]) == rt.clock.now_ms() // 1000
        verified = standardwebhooks.Webhook(SECRET).verify(receiver.raw[-1], headers)
        assert verified["run_id"] == run["run_id"] and verified["output"] == "run r [trigger=manual]"
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(receiver.raw[-1], headers)
        # each retry is signed afresh: a 503 then a 200, two signatures, both valid
        receiver.status = 503
        rt.clock.set(rt.clock.now_ms() + 2000)
        second = await deliver(rt, spec, "again")
        assert second["delivery_status"] == "failed" and len(receiver.raw) == 3
        for raw, h in zip(receiver.raw[1:], receiver.headers[1:], strict=True):
            standardwebhooks.Webhook(SECRET).verify(raw, {k.lower(): v for k, v in h.items()})
        monkeypatch.delenv("HOOK_SIGNING_SECRET")
        missing = await deliver(rt, spec, "unset")
        assert missing["delivery_error"] == "channel unset-ch: signing_secret: environment variable HOOK_SIGNING_SECRET is not set"

    asyncio.run(main())


def test_static_rules() -> None:
    assert url_problems("https://hooks.example.invalid/x") == []
    assert url_problems("http://127.0.0.1:9/x") == [] and url_problems("http://10.0.0.5/x") == []  # loopback, private
    assert url_problems("http://169.254.3.3/x") == []  # link-local: decided by the daemon config, at delivery
    assert url_problems("http://a:b@h/x") == ["must not carry credentials (user:password@): send them in a header written as {env: NAME}"]
    assert url_problems("http://h:99999/") == ["not a valid URL: Port out of range 0-65535"]
    assert path_problems("reports/x.jsonl") == [] and path_problems("/var/log/palyra/x.jsonl") == []
    assert path_problems("/dev/sda") == ["/dev/sda is on a kernel or device filesystem"]
    assert path_problems("a/") == ["must name a file, not a directory"]
    ll = ipaddress.ip_address("169.254.10.1")
    assert address_problem(ll, allow_link_local=True) is None and address_problem(ll, allow_link_local=False)
    assert address_problem(ipaddress.ip_address("169.254.169.254"), allow_link_local=True) == "a cloud instance-metadata address"


def test_the_daemon_takes_its_delivery_rules_from_its_config(daemon_factory, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    d = daemon_factory(config={"delivery": {"file_root": str(out)}})
    ch = [
        {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "f"}, "spec": {"type": "file", "path": "x.jsonl"}},
        {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "ll"},
         "spec": {"type": "webhook", "url": "http://169.254.1.1/hook", "retries": 0}},
    ]
    routines = [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": n},
                 "spec": {"prompt": n, "trigger": {"kind": "manual"},
                          "delivery": {"mode": "specific_channel", "channel": c}}} for n, c in (("to-f", "f"), ("to-ll", "ll"))]
    d.write("c.yaml", ch + routines)
    d.apply()
    for name in ("to-f", "to-ll"):
        assert d.client().post("/console/v1/routines/dispatch", json={"routine_id": name}).status_code == 202
    runs = d.wait_for(lambda: (r := d.runs()) and len(r) == 2 and all(x["delivery_status"] for x in r) and r,
                      what="two deliveries")
    by = {r["routine_id"]: r for r in runs}
    assert by["to-f"]["delivery_status"] == "delivered" and json.loads((out / "x.jsonl").read_text())["routine_id"] == "to-f"
    assert not (d.paths.state_root / "deliveries").exists()
    assert by["to-ll"]["delivery_status"] == "failed"
    assert by["to-ll"]["delivery_error"] == ("webhook ll: refused target: 169.254.1.1 is a link-local address (allowed "
                                             "only with delivery.allow_link_local_targets in the daemon config)")


def test_delivery_config_keys() -> None:
    from palyra_ops.config import build_config
    from palyra_ops.errors import PalyraError

    cfg = build_config({"delivery": {"file_root": "out", "allow_link_local_targets": True}}, base_dir=Path("/etc/palyra"))
    assert cfg.delivery.file_root == Path("/etc/palyra/out") and cfg.delivery.allow_link_local_targets is True
    assert build_config({}).delivery.file_root is None and build_config({}).delivery.allow_link_local_targets is False
    with pytest.raises(PalyraError, match="delivery.file_dir: unknown key"):
        build_config({"delivery": {"file_dir": "x"}})
    with pytest.raises(PalyraError, match="delivery.allow_link_local_targets: expected true or false"):
        build_config({"delivery": {"allow_link_local_targets": "yes"}})
