"""EventParser: the same events whatever the chunking and line ends; comments and the retry hint skipped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replog.client.sse import Event, EventParser

STREAM = (
    b"retry: 1000\n\n"
    b'id: 1\nevent: message\ndata: {"seq":1,"id":"a","text":"x"}\n\n'
    b": keep-alive\n\n"
    b'id: 2\nevent: message\ndata: {"seq":2,"id":"b","text":"line\\nbreak"}\n\n'
    b"data: first\ndata: second\n\n"
    b"event: other\nid: 9\ndata:no space\n\n"
)
WANT = [
    Event(b"1", b"message", b'{"seq":1,"id":"a","text":"x"}'),
    Event(b"2", b"message", b'{"seq":2,"id":"b","text":"line\\nbreak"}'),
    Event(None, b"message", b"first\nsecond"),
    Event(b"9", b"other", b"no space"),
]


def feed_all(chunks: list[bytes]) -> list[Event]:
    parser = EventParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_a_whole_stream() -> None:
    assert feed_all([STREAM]) == WANT


def test_crlf_and_cr_line_ends() -> None:
    assert feed_all([STREAM.replace(b"\n", b"\r\n")]) == WANT
    # A CR at the very end may be half a CRLF: the next bytes (here a comment) settle it.
    assert feed_all([STREAM.replace(b"\n", b"\r"), b": more\r\r"]) == WANT


def test_an_unfinished_event_waits_for_its_end() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\nevent: message\ndata: {}") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [Event(b"1", b"message", b"{}")]


@given(st.lists(st.integers(0, len(STREAM) * 2), max_size=20), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_events(cuts: list[int], newline: bytes) -> None:
    data = (STREAM + b": more\n\n").replace(b"\n", newline)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(chunks) == WANT


def test_feed_messages_gives_the_data_of_the_message_events() -> None:
    assert EventParser().feed_messages(STREAM) == [e.data for e in WANT if e.event == b"message"]


TRICKY = [  # events whose layout is not replog's own: the one-pass path must hand them to feed()
    b'id: 1\nevent: message\ndata: {"text":"data: inside"}\n\n',
    b"data: two\ndata: lines\n\n",
    b"event: other\ndata: not a message\n\n",
    b"id: 2\nevent: message\ndata: plain\n\n",
]


@given(
    st.lists(st.sampled_from([*TRICKY, b": keep-alive\n\n"]), max_size=8),
    st.lists(st.integers(0, 400), max_size=10),
    st.sampled_from([b"\n", b"\r\n"]),
)
def test_feed_messages_matches_feed_for_any_events_and_chunking(
    blocks: list[bytes], cuts: list[int], newline: bytes
) -> None:
    data = (b"".join(blocks) + b": end\n\n").replace(b"\n", newline)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    fast = EventParser()
    got = [d for chunk in chunks for d in fast.feed_messages(chunk)]
    assert got == [e.data for e in feed_all(chunks) if e.event == b"message"]
