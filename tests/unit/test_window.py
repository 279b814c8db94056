"""The one in-flight window (client/window.py), for send and get."""

from __future__ import annotations

import threading

from fastxfer.client.window import Window


def test_room_ends_at_the_count_or_at_the_bytes() -> None:
    w = Window(max_items=2, max_bytes=100)
    assert w.has_room()
    w.add("a", 1, 10)
    assert w.has_room()
    w.add("b", 2, 10)
    assert not w.has_room()  # two items
    w.pop("a")
    w.pop("b")
    w.add("c", 3, 100)
    assert not w.has_room()  # one item, but 100 bytes
    assert w.pop("c") == 3 and w.has_room()


def test_pop_of_an_unknown_key_is_none_and_costs_nothing() -> None:
    w = Window(max_items=1, max_bytes=10)
    w.add("a", "x", 10)
    assert w.pop("zz") is None and not w.has_room()
    assert w.get("a") == "x" and len(w) == 1 and w
    assert w.pop("a") == "x" and not w and w.has_room()


def test_pop_where_takes_every_match() -> None:
    w = Window(max_items=10, max_bytes=1000)
    for i in range(6):
        w.add((i % 2, i), i, 1)
    assert sorted(w.pop_where(lambda k: k[0] == 1)) == [1, 3, 5]
    assert sorted(w.items()) == [0, 2, 4]


def test_two_threads_keep_the_count_exact() -> None:
    w = Window(max_items=10**6, max_bytes=10**9)

    def work(base: int) -> None:
        for i in range(2000):
            w.add((base, i), i, 3)
            if i % 2:
                w.pop((base, i))

    threads = [threading.Thread(target=work, args=(b,)) for b in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(w) == 2000 and w._bytes == 6000
