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
    e.UnknownTarget: 400,
}


def _instance(cls: type[e.PalyraError]) -> e.PalyraError:
    return cls([]) if cls is e.ValidationFailed else cls("boom")


def test_every_domain_error_class_is_expected() -> None:
    declared = {c for _, c in inspect.getmembers(e, inspect.isclass) if issubclass(c, e.PalyraError)}
    assert declared == set(EXPECTED), "give the new error class a status in EXPECTED (and server.errors.STATUS)"


@pytest.mark.parametrize(("cls", "status"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_most_specific_class_decides_the_status(cls: type[e.PalyraError], status: int) -> None:
    exc = _instance(cls)
    assert exc.status is None  # the domain error itself carries no HTTP status
    assert http_status(exc) == status
    assert error_response(exc).status_code == status
    assert statuses(cls) == {status}


def test_an_explicit_status_is_honoured_until_its_raiser_uses_a_named_error() -> None:
    assert http_status(e.PalyraError("backend down", code="dispatch_failed", status=502)) == 502
    assert http_status(e.InvalidInput("odd", status=409)) == 409


def test_only_a_token_refusal_names_the_bearer_scheme() -> None:
    assert error_response(e.NotAuthenticated("missing bearer token")).headers["www-authenticate"] == 'Bearer realm="palyra"'
    assert "www-authenticate" not in error_response(e.BadSignature("webhook x: bad")).headers
    assert "www-authenticate" not in error_response(e.NotFound("no routine 'x'")).headers
