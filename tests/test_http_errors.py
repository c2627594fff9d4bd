"""The server's error table: domain errors carry a code, the server alone gives them a status.

The statuses are those the error classes carried before they stopped speaking HTTP; every error class
of `palyra_ops.errors` is covered, so a new one cannot reach the API with a status nobody chose.
"""

from __future__ import annotations

import inspect

import pytest

from palyra_ops import errors
from palyra_ops.errors import (
    BackendFailed,
    BadSignature,
    Conflict,
    DaemonAlreadyRunning,
    InvalidInput,
    JournalBusy,
    JournalError,
    JournalFull,
    JournalReadOnly,
    JournalUnavailable,
    JournalUnsupported,
    NotAuthenticated,
    NotFound,
    PalyraError,
    PayloadTooLarge,
    PermissionDenied,
    StalePlan,
    Unavailable,
    ValidationFailed,
)
from palyra_ops.server.errors import error_response, http_status, statuses

EXPECTED = {
    PalyraError: 400, InvalidInput: 400, NotAuthenticated: 401, BadSignature: 401, PermissionDenied: 403,
    NotFound: 404, Conflict: 409, StalePlan: 409, DaemonAlreadyRunning: 409, PayloadTooLarge: 413,
    ValidationFailed: 422, BackendFailed: 502, Unavailable: 503, JournalError: 503, JournalBusy: 503,
    JournalUnavailable: 503, JournalFull: 503, JournalReadOnly: 503, JournalUnsupported: 400,
}


def _instance(cls: type[PalyraError]) -> PalyraError:
    return cls([]) if cls is ValidationFailed else cls("boom")


def test_every_domain_error_class_is_expected() -> None:
    declared = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, PalyraError)}
    assert declared == set(EXPECTED), "give the new error class a status in EXPECTED (and server.errors.STATUS)"


@pytest.mark.parametrize(("cls", "status"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_most_specific_class_decides_the_status(cls: type[PalyraError], status: int) -> None:
    exc = _instance(cls)
    assert exc.status is None  # the domain error itself carries no HTTP status
    assert http_status(exc) == status
    assert error_response(exc).status_code == status
    assert statuses(cls) == {status}


def test_an_explicit_status_is_honoured_until_its_raiser_uses_a_named_error() -> None:
    assert http_status(PalyraError("backend down", code="dispatch_failed", status=502)) == 502
    assert http_status(InvalidInput("odd", status=409)) == 409


def test_only_a_token_refusal_names_the_bearer_scheme() -> None:
    assert error_response(NotAuthenticated("missing bearer token")).headers["www-authenticate"] == 'Bearer realm="palyra"'
    assert "www-authenticate" not in error_response(BadSignature("webhook x: bad")).headers
    assert "www-authenticate" not in error_response(NotFound("no routine 'x'")).headers
