"""User-facing error types.

Every failure an operator can cause (bad YAML, a stale plan, a wrong token) is raised as a
`PalyraError` so the CLI and HTTP layers can turn it into a one-line message or a JSON error body
instead of a traceback. Anything else reaching the top is a bug and is allowed to show as one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class PalyraError(Exception):
    """An expected failure with a message fit to show the user as-is.

    Errors are named by what went wrong (the classes below) and carry a machine-readable `code`
    (HTTP error bodies, `--output json`). They carry no HTTP status: the server maps each class to
    one (`palyra_ops.server.errors.STATUS`), so the domain never speaks HTTP.
    """

    #: machine-readable code used in HTTP error bodies and JSON output
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(PalyraError):
    """What the caller sent is malformed or out of range (a body, a parameter, a flag)."""

    code = "bad_request"


class NotAuthenticated(PalyraError):
    """No credential, or one that is not valid."""

    code = "unauthorized"


class BadSignature(NotAuthenticated):
    """A signed webhook whose signature does not verify: the signature, not a bearer token, is its
    credential, so the answer names no token scheme to retry with."""

    code = "bad_signature"


class PermissionDenied(PalyraError):
    """A valid caller asked for something it may not do (e.g. forging a system:daemon run)."""

    code = "forbidden"


class PayloadTooLarge(PalyraError):
    """A request body over the configured limit."""

    code = "too_large"


class BackendFailed(PalyraError):
    """The agent backend (or another upstream the daemon calls for the caller) failed."""

    code = "backend_error"


class DispatchFailed(BackendFailed):
    """The loopback call to the daemon's own gateway failed on every try (the run was not received)."""

    code = "dispatch_failed"


class Unavailable(PalyraError):
    """A part of the daemon the request needs is not running or not set up (the gateway, the memory
    service, a webhook secret); the same request can succeed once it is."""

    code = "unavailable"


class NotFound(PalyraError):
    code = "not_found"


class Conflict(PalyraError):
    code = "conflict"


class StalePlan(PalyraError):
    code = "stale_plan"


class UnknownTarget(InvalidInput):
    """A `--target`/`--exclude` that names nothing in the directory or the journal: a typo must not
    read as "no changes"."""

    code = "unknown_target"


class JournalError(PalyraError):
    """The journal cannot do what was asked for a reason outside the request (busy, full, unopenable).

    The same request can succeed later, once the journal is free, has space or is fixed.
    `path` is the journal it concerns, so every message can name it.
    """

    code = "journal_error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class JournalBusy(JournalError):
    """Another connection held the journal's write lock for the whole busy timeout."""

    code = "journal_busy"

    def __init__(self, message: str, *, path: str | None = None, waited_s: float = 0.0) -> None:
        super().__init__(message, path=path)
        self.waited_s = waited_s


class JournalUnavailable(JournalError):
    """The journal cannot be opened, read or written at all (not a file, I/O error, ...)."""

    code = "journal_unavailable"


class JournalFull(JournalUnavailable):
    """A write failed because the journal's file system (or its page limit) has no room left."""

    code = "journal_full"


class JournalReadOnly(JournalUnavailable):
    """A write failed because the journal (its file, directory or file system) is read-only."""

    code = "journal_readonly"


class JournalUnsupported(JournalError):
    """A journal location this build cannot use (today: any URL; SPEC §4's PostgreSQL is not here yet).
    The caller's choice, not a passing state: the server treats it as invalid input."""

    code = "journal_unsupported"


class DaemonAlreadyRunning(PalyraError):
    """A second daemon on a SQLite journal another live daemon holds (SPEC §11, last paragraph)."""

    code = "daemon_running"


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One validation finding, positioned in a source file.

    Ordered by (file, line, column) so reports read top to bottom per file.
    """

    file: str
    line: int  # 1-based; 0 when the finding concerns the whole file
    column: int  # 1-based; 0 when unknown
    path: str  # dotted field path such as "spec.policies.concurrency"; "" for file-level findings
    message: str
    source_line: str = field(default="", compare=False)
    code: str = field(default="invalid", compare=False)

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {what}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "code": self.code,
            "source_line": self.source_line,
        }


class ValidationFailed(PalyraError):
    """Raised when a routine directory has errors; carries every diagnostic, not just the first."""

    code = "invalid"

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        n = len(self.diagnostics)
        super().__init__(f"{n} validation error{'s' if n != 1 else ''}")
