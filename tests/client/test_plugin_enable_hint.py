"""Asking for a processor or annotator that is not enabled says how to enable it: an
admin's `nai-admin plugin enable NAME` (on a personal server, the user is the admin)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient


@pytest.mark.parametrize(("verb", "plugin"), [("process", "split"), ("annotate", "labeller")])
def test_a_plugin_not_enabled_says_how_to_enable_it(api: TestClient, verb: str,
                                                    plugin: str) -> None:
    reply = api.post(f"/v1/datasets/pets/{verb}", json={"plugin": plugin})
    assert reply.status_code == 404, reply.text
    message = reply.json()["error"]["message"]
    assert f"`nai-admin plugin enable {plugin}`" in message
    assert "personal server" in message and "nai plugins" in message
