"""Versions, names and the two bases of every wire model: strict requests, lenient replies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

from nai_server.core.bounds import json_problem
from nai_server.core.states import TERMINAL, JobState
from nai_server.core.trees import is_digest
from nai_server.protocol.validation import described

# Major.minor: a client refuses a server with another major version.
# 1.1: services, dry-run submits (`POST /v1/jobs?dry_run=1`), models from jobs.
# 1.2: a spec's env may set NAI_ARRAY_INDEX (`nai submit --array`); the overrides
#      `after` and `after_ok` add to the spec's jobs instead of replacing them.
API_VERSION = "1.2"

TERMINAL_STATES: frozenset[JobState] = TERMINAL
"""States a job never leaves: succeeded, failed, cancelled, timed_out, lost."""

NAME_WORDS = "letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_RULE = f"use {NAME_WORDS}, at most 64 characters"
NAME_PATTERN = described(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", NAME_RULE)
METHOD_OVERRIDE_HEADER = "X-HTTP-Method-Override"


def _free_json(value: Any) -> Any:
    """Free JSON a client sends (metadata, spec fields) must be storable as it is."""
    if (why := json_problem(value)) is not None:
        raise ValueError(why)
    return value


def _digest(value: str | None) -> str | None:
    if value is not None and not is_digest(value):
        raise ValueError("must be a tree id: 64 lowercase hex characters (a sha256 digest)")
    return value


FreeJSON = Annotated[dict[str, Any], AfterValidator(_free_json)]
DIGEST_PATTERN = r"^[0-9a-f]{64}$"
# A blob or tree id, as the schema says it; the code checks it itself (its messages).
DigestText = Annotated[str, WithJsonSchema({"type": "string", "pattern": DIGEST_PATTERN})]


class Model(BaseModel):
    """Base for wire models: unknown fields are refused so typos surface."""

    model_config = ConfigDict(extra="forbid")


class Reply(BaseModel):
    """Base for what the server answers: unknown fields are ignored, so a server that
    adds one (a minor API version) still serves older clients. What clients send stays
    a `Model`, strict. (Quota and DrainState travel both ways: strict here, and the
    client drops what it does not know before reading them.)"""

    model_config = ConfigDict(extra="ignore")
