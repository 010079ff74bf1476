"""MessagesView.events: the events cut from the view's cached JSON are exactly the entries, one event each."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from replog import views
from replog.client.sse import EventParser
from replog.log import Log
from replog.views import MessagesView

NASTY = [',{"seq":', '"},{"seq":1,"id":"x","text":"', "\n\ndata: x\n\n", "é ✓ \u2028", "\\", ""]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.sampled_from(NASTY) | st.text(max_size=12), min_size=1, max_size=2 * views.CHUNK + 40),
    data=st.data(),
)
def test_events_are_the_entries_in_order(texts: list[str], data: st.DataObject) -> None:
    log = Log("0123456789abcdef")
    for i, text in enumerate(texts):
        log.append(text, None if i % 2 else f"id-{i}")
    view = MessagesView(log)
    first = data.draw(st.integers(1, len(texts)))
    last = data.draw(st.integers(first, len(texts)))
    view.body()  # complete chunks cached, as after a GET /messages
    encoded = view.events(first, last)
    assert view.events(first, last) is encoded  # asked again (another stream): not encoded again
    parsed = EventParser().feed(encoded)
    assert [int(e.id) for e in parsed] == list(range(first, last + 1))  # type: ignore[arg-type]
    assert [orjson.loads(e.data) for e in parsed] == log.dicts(first - 1, last - first + 1)
    assert all(e.event == b"message" for e in parsed)
