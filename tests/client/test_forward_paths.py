"""A forwarded port reaches the service's own routes only: a path with `.` or `..`
segments would be resolved by the HTTP client into another route of the API, called
as the user who runs the forward."""

from __future__ import annotations

import pytest

from nai_server.protocol import Invalid
from nai_tui.remote.service_calls import inner_path


@pytest.mark.parametrize("path", ["../../../v1/jobs/5", "a/../../x", "%2e%2e/v1/me",
                                  "./predict", "x/%2E/y", "/../v1/services"])
def test_dot_segments_are_refused(path: str) -> None:
    with pytest.raises(Invalid, match="not passed on"):
        inner_path(path)


def test_ordinary_paths_pass() -> None:
    assert inner_path("/predict") == "predict"
    assert inner_path("v1/models/a..b?x=../y") == "v1/models/a..b?x=../y"
