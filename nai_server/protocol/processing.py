"""Dataset processing on the wire: `POST /v1/datasets/{name}/process` and
`POST /v1/datasets/{name}/annotate`."""

from __future__ import annotations

from typing import Any, Literal

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


class DatasetAnnotate(Model):
    """Serve an installed annotator's web app over a version of dataset `{name}` as a
    service of the caller's (kind "annotator", named `name`), reached at
    `/v1/services/{name}/invoke/` (`nai service forward`). Stopping it (`DELETE
    /v1/services/{name}`, or `POST .../invoke/_nai/finish` from the page) saves its
    labels as the next version of dataset `to` (default: the same), with lineage
    (source version, annotator and its options, the session, who labelled); a session
    that fails is saved too. `gpus`, `cpus`, `memory` and `group` as for a service;
    `visibility` says who may label besides its writers (with read access to the
    dataset): "group" (default) the owner's groups, "shared" everyone, "private" none."""

    version: str = Field(default="latest", max_length=64)  # a number, a tag or latest
    plugin: str = Field(pattern=NAME_PATTERN, max_length=64)
    options: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS)
    to: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    name: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    gpus: int = Field(default=0, ge=0, le=64)
    cpus: Any = None
    memory: Any = None
    group: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    visibility: Literal["private", "group", "shared"] = "group"
