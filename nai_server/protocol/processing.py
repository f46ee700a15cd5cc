"""Dataset processing on the wire: `POST /v1/datasets/{name}/process` and
`POST /v1/datasets/{name}/annotate`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nai_server.protocol.base import NAME_PATTERN, Model

MAX_OPTIONS = 64


class DatasetProcess(Model):
    """Process a version of dataset `{name}` with an installed dataset processor, as a
    job of the caller's: on success its output becomes the next version of dataset
    `to` (default: the same dataset), with lineage (source version, processor, options).
    `gpus`, `cpus`, `memory`, `time_limit` and `group` mean what they mean in nai.yaml;
    a processing job takes no GPU unless asked."""

    version: str = Field(default="latest", max_length=64)  # a number, a tag or latest
    plugin: str = Field(pattern=NAME_PATTERN, max_length=64)
    options: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS)
    to: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    name: str | None = Field(default=None, max_length=64)
    gpus: int = Field(default=0, ge=0, le=64)
    cpus: Any = None
    memory: Any = None
    time_limit: Any = None
    group: str | None = Field(default=None, max_length=64)


class DatasetAnnotate(DatasetProcess):
    """Serve an installed annotator's web app over a version of dataset `{name}`, as a
    job of the caller's, reached at `/v1/jobs/{id}/app/`: the labels it saves become
    the next version of dataset `to` (default: the same) when the job ends cleanly
    (`POST /v1/jobs/{id}/app/_nai/finish`, or its time limit near), with lineage
    (source version, annotator, options). Cancelling it keeps no labels."""
