"""The OpenAPI document: every status each route can answer, with the error body.

FastAPI documents a route's success answer and a 422 this API never sends (validation
errors are 400, api.app). The error statuses are derived here, once for every route,
from what the route is, so a new route is documented without anyone remembering to:

- 400 always: a malformed body or parameter, a bad method override, or `Invalid`
  from the service (`Unstorable` included);
- 413 where the body cap applies (api.limits): every route but the packed upload;
- 401 and 403 wherever the caller is resolved (all but PUBLIC): no peer, unregistered,
  not an admin, or not allowed;
- 404 and 409 where the request names something (a path parameter or a body): it may
  not exist, or clash with the state it is in, or need blobs the store lost;
- 409, 503 and 507 for every write (`Conflict`; `CommitFailed` when the state could not
  be written; `DiskFull`).

Answers and bodies that are not JSON (streams, the packed upload, HEAD) and path
parameters the code checks itself are declared in the tables below; building the
document fails for a route that streams without an entry, so the tests catch it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from nai_server.api.limits import body_limit
from nai_server.protocol import DIGEST_PATTERN, ErrorBody

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_BINARY = {"type": "string", "format": "binary"}

ERROR_STATUSES: dict[int, str] = {
    400: "The request is malformed or names something impossible",
    401: "The caller's identity could not be established",
    403: "The caller is not registered, or may not do this",
    404: "Something the request names does not exist (or the caller may not see it)",
    409: "The request clashes with the current state",
    413: "The request body is larger than this route's limit",
    503: "The daemon could not record the change; nothing was changed, try again",
    507: "The server's disk is full (or below its free-space floor); ask an admin",
}

# The operations that answer without resolving the caller: clients check the version
# before anything else, registered or not.
PUBLIC = {("GET", "/v1/version")}

# (method, path) → the media type of a success answer that is not JSON.
STREAMED: dict[tuple[str, str], str] = {
    ("GET", "/v1/jobs/{job_id}/logs"): "text/plain",
    ("GET", "/v1/jobs/{job_id}/logs/range"): "application/octet-stream",
    ("GET", "/v1/jobs/{job_id}/outputs/archive"): "application/x-tar",
    ("GET", "/v1/jobs/{job_id}/outputs/file"): "application/octet-stream",
    ("GET", "/v1/trees/{tree_id}/archive"): "application/x-tar",
    ("POST", "/v1/trees/{tree_id}/archive"): "application/x-tar",
}

# (method, path) → (media type, description) of a body the route reads itself.
RAW_BODIES: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/v1/blobs"): ("application/x-tar",
                           "A tar stream whose members are named by their sha256 digest"),
}


# Path parameters the code checks itself (for its own messages), as the schema says them.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "tree_id": {"type": "string", "pattern": DIGEST_PATTERN},
}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` answer the completed document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the document declares at `path` (a request's path), for `Allow`."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            _complete(operation, method.upper(), path)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses `method path` can answer (see the module's docstring)."""
    codes = {400}
    if body_limit(method, path) is not None:
        codes.add(413)
    if (method, path) not in PUBLIC:
        codes |= {401, 403}
    names = "requestBody" in operation or any(
        p.get("in") == "path" for p in operation.get("parameters", ()))
    if names:
        codes |= {404, 409}
    if method in _WRITES:
        codes |= {409, 503, 507}
    return codes


def _complete(operation: dict[str, Any], method: str, path: str) -> None:
    key = (method, path)
    for parameter in operation.get("parameters", ()):
        if parameter.get("in") == "path" and parameter["name"] in PATH_PARAMETERS:
            parameter["schema"] = dict(PATH_PARAMETERS[parameter["name"]])
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status, response in responses.items():
        if not status.startswith("2") or method == "HEAD":
            continue
        content = response.get("content")
        if key in STREAMED:
            media = STREAMED[key]
            response["content"] = {media: {"schema": {"type": "string"}
                                           if media.startswith("text/") else _BINARY}}
        elif content is not None and content.get("application/json", {}).get("schema") == {}:
            raise RuntimeError(f"{method} {path} answers something other than JSON: give "
                               "its media type in nai_server.api.openapi.STREAMED")
    if key in RAW_BODIES:
        media, description = RAW_BODIES[key]
        operation["requestBody"] = {"required": True, "description": description,
                                    "content": {media: {"schema": _BINARY}}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for code in sorted(statuses(method, path, operation)):
        responses.setdefault(str(code), {"description": ERROR_STATUSES[code], "content": error})
    if method == "HEAD":  # the status is the answer: no body, so no media type
        for response in responses.values():
            response.pop("content", None)
