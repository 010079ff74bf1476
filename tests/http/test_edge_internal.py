"""The connection gate and auth agree on which requests are a master's (internal) ones."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from replog.edge import heartbeat, internal


@pytest.mark.parametrize(
    ("path", "headers", "want"),
    [
        ("/health", {}, False),
        ("/health?at=3", {}, True),
        ("/health", {"Replog-Master": "m1"}, True),
        ("/health", {"Replog-Epoch": "2"}, True),
        ("/replicate", {}, True),
        ("/entries?from=1", {}, True),
        ("/messages", {}, False),
        ("/messages/stream", {"Replog-Master": "m1"}, False),
    ],
)
def test_internal_names_every_call_a_master_makes(path: str, headers: dict[str, str], want: bool) -> None:
    request = make_mocked_request("GET", path, headers=headers)
    assert internal(request) is want
    if request.path == "/health":
        assert heartbeat(request) is want  # the function auth asks: the two agree
