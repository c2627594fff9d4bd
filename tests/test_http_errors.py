"""The server's error table: domain errors carry a code, the server alone gives them a status.

The statuses are those the error classes carried before they stopped speaking HTTP; every error class
of `palyra_ops.errors` is covered, so a new one cannot reach the API with a status nobody chose.
"""

from __future__ import annotations

import inspect

import pytest

from palyra_ops import errors as e
from palyra_ops.server.errors import error_response, http_status, statuses

EXPECTED: dict[type[e.PalyraError], int] = {
    e.PalyraError: 400, e.InvalidInput: 400, e.NotAuthenticated: 401, e.BadSignature: 401, e.PermissionDenied: 403,
    e.NotFound: 404, e.Conflict: 409, e.StalePlan: 409, e.DaemonAlreadyRunning: 409, e.PayloadTooLarge: 413,
    e.ValidationFailed: 422, e.BackendFailed: 502, e.Unavailable: 503, e.JournalError: 503, e.JournalBusy: 503,
    e.JournalUnavailable: 503, e.JournalFull: 503, e.JournalReadOnly: 503, e.JournalUnsupported: 400,
    e.UnknownTarget: 400, e.DispatchFailed: 502,
}


def _instance(cls: type[e.PalyraError]) -> e.PalyraError:
    return cls([]) if cls is e.ValidationFailed else cls("boom")


def test_every_domain_error_class_is_expected() -> None:
    declared = {c for _, c in inspect.getmembers(e, inspect.isclass) if issubclass(c, e.PalyraError)}
    assert declared == set(EXPECTED), "give the new error class a status in EXPECTED (and server.errors.STATUS)"


@pytest.mark.parametrize(("cls", "status"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_most_specific_class_decides_the_status(cls: type[e.PalyraError], status: int) -> None:
    exc = _instance(cls)
    assert not hasattr(exc, "status")  # the domain error itself carries no HTTP status
    assert http_status(exc) == status
    assert error_response(exc).status_code == status
    assert statuses(cls) == {status}


def test_no_error_can_carry_a_status_of_its_own() -> None:
    with pytest.raises(TypeError):
        e.PalyraError("backend down", status=502)  # type: ignore[call-arg]
    assert http_status(e.PalyraError("backend down", code="dispatch_failed")) == 400


@pytest.mark.parametrize(("status", "code", "cls"), [
    (403, "forbidden", e.PermissionDenied), (404, "not_found", e.NotFound), (409, "conflict", e.Conflict),
    (503, "journal_busy", e.JournalBusy), (502, "backend_error", e.BackendFailed),
    (418, "teapot", e.BackendFailed), (404, None, e.NotFound), (400, "unknown_target", e.UnknownTarget),
])
def test_the_loopback_turns_a_gateway_answer_back_into_its_domain_error(status: int, code: str | None,
                                                                          cls: type[e.PalyraError]) -> None:
    from palyra_ops.answers import answer_error

    exc = answer_error(status, code, "m")
    assert type(exc) is cls and exc.message == "m" and exc.code == (code or cls.code)
    if code != "teapot":
        assert http_status(exc) == status  # a dispatch through the loopback answers as the gateway did


def test_only_a_token_refusal_names_the_bearer_scheme() -> None:
    assert error_response(e.NotAuthenticated("missing bearer token")).headers["www-authenticate"] == 'Bearer realm="palyra"'
    assert "www-authenticate" not in error_response(e.BadSignature("webhook x: bad")).headers
    assert "www-authenticate" not in error_response(e.NotFound("no routine 'x'")).headers
