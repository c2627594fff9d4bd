"""An error answer of the daemon's HTTP API back into the domain error that caused it.

For the two clients of that API: the scheduler's loopback call and the CLI's `client`. The server
renders a domain error as its code and a status (server/errors.py); turning the answer back into the
same class lets a caller handle it by meaning (and a console route relaying it answer with the same
status) without any HTTP status travelling through the domain.
"""

from __future__ import annotations

from palyra_ops import errors


def _by_code() -> dict[str, type[errors.PalyraError]]:
    out: dict[str, type[errors.PalyraError]] = {}
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.PalyraError) and cls is not errors.ValidationFailed:
            out.setdefault(cls.code, cls)
    return out


#: the gateway's error codes back to the classes that raised them (the server rendered them)
ERRORS_BY_CODE = _by_code()
#: an answer with a code this client does not know is judged by its status
ERRORS_BY_STATUS: dict[int, type[errors.PalyraError]] = {
    400: errors.InvalidInput, 401: errors.NotAuthenticated, 403: errors.PermissionDenied, 404: errors.NotFound,
    409: errors.Conflict, 413: errors.PayloadTooLarge, 422: errors.InvalidInput, 503: errors.Unavailable,
}


def answer_error(status: int, code: str | None, message: str) -> errors.PalyraError:
    """The domain error an error answer of the gateway stands for, so a caller of `dispatch` (the
    console route behind `cron run-now`) answers with the status the gateway chose, without any HTTP
    status travelling through the domain."""
    cls = ERRORS_BY_CODE.get(code or "") or ERRORS_BY_STATUS.get(status, errors.BackendFailed)
    exc = cls(message)
    if code:
        exc.code = code
    return exc
