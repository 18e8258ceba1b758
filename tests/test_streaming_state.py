"""The streaming steps' state: a ledger of changes per key, and how Beam's cache weighs it.

The whole graph runs on real runners in ``tests/test_accounts.py``, ``tests/test_kafka_e2e.py``
and ``tests/test_live.py``; these check the ledger's own rules with plain stand-ins for a
key's bag and value state.
"""

from __future__ import annotations

import pickle
from typing import Any, List, Optional

import transforms.streaming as streaming
from transforms.streaming import _Ledger


class _Bag:
    def __init__(self) -> None:
        self.items: List[bytes] = []

    def read(self) -> List[bytes]:
        return list(self.items)

    def add(self, item: bytes) -> None:
        self.items.append(item)

    def clear(self) -> None:
        self.items = []


class _Value:
    def __init__(self) -> None:
        self.value: Optional[Any] = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


def _apply(value: dict, changes: dict) -> None:
    value.update(changes)


def test_a_bundle_appends_what_it_changed_and_a_cold_read_replays_it() -> None:
    ledger = _Ledger("test-replay", _apply)
    log, token = _Bag(), _Value()
    value, tok = ledger.read("k", token, log)
    assert value is None and tok is None
    value = {"a": 1}
    ledger.write("k", value, {"a": 1}, tok, token, log)  # the first write is whole
    for i in range(5):
        value, tok = ledger.read("k", token, log)
        value[f"n{i}"] = i
        ledger.write("k", value, {f"n{i}": i}, tok, token, log)
    assert len(log.items) == 6
    assert pickle.loads(log.items[-1]) == (1, {"n4": 4})  # only the change
    streaming._CURRENT.clear()  # a new process: no copy of its own
    value, tok = ledger.read("k", token, log)
    assert value == {"a": 1, "n0": 0, "n1": 1, "n2": 2, "n3": 3, "n4": 4}


def test_a_stale_token_is_not_trusted() -> None:
    """A bundle that wrote but was not committed leaves the process a copy under a token the
    state does not have: the next read replays the log instead of using the copy."""
    ledger = _Ledger("test-stale", _apply)
    log, token = _Bag(), _Value()
    ledger.write("k", {"a": 1}, None, None, token, log)
    committed_log, committed_token = list(log.items), token.value
    value, tok = ledger.read("k", token, log)
    value["lost"] = 1
    ledger.write("k", value, {"lost": 1}, tok, token, log)
    log.items, token.value = committed_log, committed_token  # the runner never committed it
    value, _ = ledger.read("k", token, log)
    assert value == {"a": 1}


def test_a_failure_before_the_write_leaves_no_copy() -> None:
    ledger = _Ledger("test-failure", _apply)
    log, token = _Bag(), _Value()
    ledger.write("k", {"a": 1}, None, None, token, log)
    value, _ = ledger.read("k", token, log)
    value["half"] = 1  # changed, then the bundle failed: no write
    value, _ = ledger.read("k", token, log)
    assert value == {"a": 1}


def test_the_log_is_compacted_once_its_changes_outweigh_the_whole_value(monkeypatch: Any) -> None:
    """A bundle writes its changes; the whole value is written again only once the changes
    logged since it weigh more than it, so the log holds at most about twice the value and
    the whole value's cost is spread over as many bytes of changes."""
    monkeypatch.setattr(streaming, "COMPACT_FLOOR", 200)
    ledger = _Ledger("test-compact", _apply)
    log, token = _Bag(), _Value()
    value: dict = {}
    tok = None
    wholes = 0
    for i in range(300):
        value[i] = i
        before = len(log.items)
        ledger.write("k", value, {i: i}, tok, token, log)
        wholes += len(log.items) <= before
        value, tok = ledger.read("k", token, log)
        whole = len(log.items[0])
        changes = sum(len(item) for item in log.items[1:])
        assert changes <= max(whole, 200)  # never more changes than the whole value
    assert 3 <= wholes <= 30  # written whole now and then, not at every write
    assert pickle.loads(log.items[0])[0] == 0  # it starts with a whole value
    assert all(pickle.loads(item)[0] == 1 for item in log.items[1:])  # then changes
    streaming._CURRENT.clear()
    assert ledger.read("k", token, log)[0] == {i: i for i in range(300)}


def test_a_token_of_the_older_form_makes_the_next_write_whole() -> None:
    ledger = _Ledger("test-old-token", _apply)
    log, token = _Bag(), _Value()
    log.items.append(pickle.dumps((0, {"a": 1})))
    token.value = (7, 1)  # (version, entries): written before the token counted bytes
    value, tok = ledger.read("k", token, log)
    value["b"] = 2
    ledger.write("k", value, {"b": 2}, tok, token, log)
    assert len(log.items) == 1 and pickle.loads(log.items[0]) == (0, {"a": 1, "b": 2})


def test_clear_forgets_the_key() -> None:
    ledger = _Ledger("test-clear", _apply)
    log, token = _Bag(), _Value()
    ledger.write("k", {"a": 1}, None, None, token, log)
    ledger.clear("k", token, log)
    assert ledger.read("k", token, log) == (None, None) and not log.items


def test_the_cache_weighs_ledger_entries_and_tokens_without_objsize(monkeypatch: Any) -> None:
    from apache_beam.runners.worker import statecache

    calls: List[Any] = []

    def beams_own(*objs: Any) -> int:
        calls.append(objs)
        return 1

    monkeypatch.setattr(statecache, "get_deep_size", beams_own)
    streaming._weigh_state_cheaply()
    weigh = statecache.get_deep_size
    assert weigh([b"x" * 100, b"y" * 10]) == 64 + 133 + 43
    assert weigh([(123, 4)]) == weigh([(123, 4, 5, 6)]) == 64 + 160  # tokens, older and newer
    assert not calls
    assert weigh(["something else"]) == 1 and calls  # anything else: Beam's own weigher


def test_a_ledger_written_before_the_kernels_moved_reads_back() -> None:
    """Checkpoints hold books pickled under their modules of the time (``transforms.accounts``,
    ``transforms.enrich``; the id check's ``IdBook``, whose state ``SeenIds`` keeps)."""
    from kernels.books import AccountBook, SeenIds
    from kernels.features import AccountHistory

    book = AccountBook()
    book.ids.check("t1", "fp", 5, 10)
    book.history.last_event_time_us = 5
    ids = SeenIds()
    ids.check("t1", "acct-1", 5, 10)
    old = pickle.dumps((0, {"acct-1": book, "ids": ids}), protocol=2)
    for new_name, old_name in (
        (b"kernels.books\nAccountBook", b"transforms.accounts\nAccountBook"),
        (b"kernels.books\nSeenIds", b"transforms.accounts\nIdBook"),
        (b"kernels.features\nAccountHistory", b"transforms.enrich\nAccountHistory"),
    ):
        assert new_name in old
        old = old.replace(new_name, old_name)
    log, token = _Bag(), _Value()
    log.items.append(old)
    token.value = (1, 1)
    value, _ = _Ledger("test-moved", _apply).read("k", token, log)
    assert type(value["acct-1"]) is AccountBook and type(value["ids"]) is SeenIds
    assert type(value["acct-1"].history) is AccountHistory
    assert value["acct-1"].ids.seen == {"t1": ("fp", 5)} and value["ids"].seen == {"t1": ("acct-1", 5)}


def test_books_written_as_objects_read_back_as_bytes() -> None:
    """The account step keeps each book pickled; a ledger of an older version holds the
    books themselves, and reads back as the same books, pickled."""
    from kernels.books import AccountBook

    book = AccountBook()
    book.ids.check("t1", "fp", 5, 10)
    log, token = _Bag(), _Value()
    log.items.append(pickle.dumps((0, {"acct-1": book})))
    log.items.append(pickle.dumps((1, {"acct-2": book})))
    token.value = (3, 2)
    streaming._CURRENT.clear()
    value, _ = streaming._BOOKS_LEDGER.read("k", token, log)
    assert sorted(value) == ["acct-1", "acct-2"] and all(type(b) is bytes for b in value.values())
    assert pickle.loads(value["acct-2"]).ids.seen == {"t1": ("fp", 5)}


def test_a_growing_log_is_weighed_by_its_new_entries(monkeypatch: Any) -> None:
    """Beam extends a cached log in place and weighs it again at every append: the weight
    of what was weighed before is kept, and the total stays right."""
    from apache_beam.runners.worker import statecache

    monkeypatch.setattr(statecache, "get_deep_size", lambda *objs: 1)
    streaming._weigh_state_cheaply()
    weigh = statecache.get_deep_size
    log = [b"x" * 100]
    assert weigh(log) == 64 + 133
    seen: List[int] = []
    for n in range(1, 50):
        log.append(b"y" * n)
        seen.append(weigh(log))
    assert seen[-1] == 64 + 133 + sum(33 + n for n in range(1, 50))
    assert streaming._WEIGHED[id(log)][0] == len(log)  # only the new entries were read
    other = [b"z" * 10]  # another log (say, after a compaction): weighed afresh
    assert weigh(other) == 64 + 43
    assert weigh([]) == 64
