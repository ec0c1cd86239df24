"""FrameQueue: drop-oldest vs blocking policies, ordering, close semantics, thread safety."""

from __future__ import annotations

import threading

import pytest

from perception.frame_queue import FrameQueue, QueueClosed


def test_latest_keeps_newest_and_counts_drops():
    q = FrameQueue(2, "latest")
    for i in range(5):
        assert q.put(i)
    assert q.drops == 3 and len(q) == 2
    assert [q.get(0), q.get(0)] == [3, 4]
    assert q.get(timeout=0.01) is None


def test_lossless_blocks_producer_until_consumed():
    q = FrameQueue(1, "lossless")
    assert q.put("a")
    assert q.put("b", timeout=0.01) is False  # full: the producer waits (here: times out)
    got = []
    consumer = threading.Thread(target=lambda: got.extend(q.get(5) for _ in range(2)))
    consumer.start()
    assert q.put("b", timeout=5)
    consumer.join(5)
    assert got == ["a", "b"] and q.drops == 0


def test_close_wakes_waiters_and_drains_first():
    q = FrameQueue(1, "lossless")
    q.put(1)
    results = {}

    def blocked_put():
        results["put"] = q.put(2)  # blocks: queue full

    t = threading.Thread(target=blocked_put)
    t.start()
    q.close()
    t.join(5)
    assert results["put"] is False
    assert q.get(0) == 1  # what was queued is still handed out
    with pytest.raises(QueueClosed):
        q.get(5)
    assert q.put(3) is False


def test_close_wakes_blocked_consumer():
    q = FrameQueue(4, "latest")
    raised = threading.Event()

    def consumer():
        try:
            q.get()
        except QueueClosed:
            raised.set()

    t = threading.Thread(target=consumer)
    t.start()
    q.close()
    t.join(5)
    assert raised.is_set()


def _drain_in_thread(q: FrameQueue) -> tuple[threading.Thread, list]:
    """A consumer thread that takes items until the queue is closed; returns it and its list."""
    received: list = []

    def consumer():
        while True:
            try:
                received.append(q.get(5))
            except QueueClosed:
                return

    t = threading.Thread(target=consumer)
    t.start()
    return t, received


def test_lossless_many_threads_every_item_once_in_order():
    q = FrameQueue(3, "lossless")
    n = 2000
    t, received = _drain_in_thread(q)
    for i in range(n):
        assert q.put(i, timeout=5)
    q.close()
    t.join(10)
    assert received == list(range(n))


def test_latest_under_concurrency_accounts_for_every_item():
    q = FrameQueue(2, "latest")
    n = 5000
    t, received = _drain_in_thread(q)
    for i in range(n):
        q.put(i)
    q.close()
    t.join(10)
    assert received == sorted(received)  # still in order
    assert len(received) + q.drops == n


@pytest.mark.parametrize(("capacity", "policy"), [(0, "latest"), (1, "newest")])
def test_bad_arguments(capacity, policy):
    with pytest.raises(ValueError):
        FrameQueue(capacity, policy)
