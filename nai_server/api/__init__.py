"""The REST API (DESIGN §4): FastAPI routes that parse, call the service, serialise."""

from __future__ import annotations

from nai_server.api.app import create_app

__all__ = ["create_app"]
