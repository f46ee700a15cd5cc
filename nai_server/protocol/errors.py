"""The error tree both sides raise, and the body every error answer carries."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class NaiError(Exception):
    """Root of every error `nai` raises on purpose; the message tells the user what to do."""


class ConnectionFailed(NaiError):
    """The server could not be reached (socket missing, SSH failure, daemon down)."""


class VersionMismatch(NaiError):
    """Client and server speak different major API versions."""


class ApiError(NaiError):
    """An error that travels as `{"error": {"code", "message"}}` with an HTTP status."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class Invalid(ApiError):
    """The request is malformed or names something impossible."""

    status = 400
    code = "invalid"


class Unauthorized(ApiError):
    """The caller's identity could not be established."""

    status = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    """The caller is known but may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """No such resource (or the caller may not know it exists)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The request clashes with current state (duplicate, wrong job state, ...)."""

    status = 409
    code = "conflict"


class Unavailable(ApiError):
    """The daemon cannot serve this now (shutting down, draining)."""

    status = 503
    code = "unavailable"


class DiskFull(ApiError):
    """The server's disk is full (or below its free-space floor): nothing new is stored."""

    status = 507
    code = "disk_full"


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (Invalid, Unauthorized, Forbidden, NotFound, Conflict, Unavailable, DiskFull)
}
ERRORS_BY_CODE[ApiError.code] = ApiError


def error_from_body(status: int, body: Any) -> ApiError:
    """Rebuild the typed error a server sent (client side)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return ApiError(f"server answered HTTP {status} without an error body")
    cls = ERRORS_BY_CODE.get(str(err.get("code")), ApiError)
    return cls(str(err.get("message", "")), details=err.get("details") or None)




class ErrorInfo(BaseModel):
    """What went wrong: `code` is one of ERRORS_BY_CODE's keys (or an HTTP-level code
    such as `too_large`), `message` says what to do, `details` is per error."""

    model_config = ConfigDict(extra="ignore")

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """The body of every error answer, whatever its status."""

    model_config = ConfigDict(extra="ignore")

    error: ErrorInfo
