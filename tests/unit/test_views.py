"""MessagesView: cached chunk encoding gives exactly the bytes of a fresh encoding, for any window."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from replog import views
from replog.log import Log
from replog.views import MessagesView


def fresh(log: Log, since: int, limit: int | None, upto: int | None = None) -> object:
    shown = log.last_seq if upto is None else min(upto, log.last_seq)
    return {"messages": [m for m in log.dicts(since, limit) if m["seq"] <= shown], "last_seq": shown}


def make_log(n: int) -> Log:
    log = Log("0123456789abcdef")
    for i in range(n):
        log.append(f'm{i} \u00e9"\\', None if i % 3 else f"client-{i}")
    return log


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 3 * views.CHUNK + 5),
    windows=st.lists(
        st.tuples(
            st.integers(0, 3 * views.CHUNK + 10),
            st.none() | st.integers(0, 2 * views.CHUNK),
            st.none() | st.integers(0, 3 * views.CHUNK + 10),
        ),
        min_size=1,
        max_size=6,
    ),
    budget=st.sampled_from([0, 30_000, 1 << 30]),
)
def test_any_window_matches_a_fresh_encoding(
    n: int, windows: list[tuple[int, int | None, int | None]], budget: int
) -> None:
    log = make_log(n)
    view = MessagesView(log, budget=budget)
    for since, limit, upto in windows:
        assert orjson.loads(view.body(since, limit, upto)) == fresh(log, since, limit, upto)


def test_appends_after_a_read_are_shown() -> None:
    log = make_log(views.CHUNK - 1)
    view = MessagesView(log)
    assert len(orjson.loads(view.body())["messages"]) == views.CHUNK - 1
    log.append("one more")
    log.append("and another")  # the first chunk is complete now, the second begins
    body = orjson.loads(view.body())
    assert body == fresh(log, 0, None)
    assert body["messages"][-1]["text"] == "and another"


def test_cache_stays_within_its_budget() -> None:
    log = make_log(10 * views.CHUNK)
    view = MessagesView(log, budget=100_000)
    view.body()
    assert 0 < view._size <= 100_000


def test_generated_ids_follow_an_adopted_identity() -> None:
    log = Log("aaaaaaaa-old")
    view = MessagesView(log)
    log.adopt("bbbbbbbb-new")
    for i in range(views.CHUNK):
        log.append(str(i))
    assert orjson.loads(view.body())["messages"][0]["id"] == "bbbbbbbb-1"
