"""Timed blocks of the engine bench: one configuration's ``Engine.infer`` calls, one at a time or
with ``--streams N`` calls in flight (a thread per engine worker), with the process's CPU time and
the RSS after each call (outside the timed window).
"""

from __future__ import annotations

import threading
import time

from perception.bench.cases import Case, rss


def time_block(case: Case, runs: int | None, seconds: float | None, tick) -> None:
    """Time ``runs`` calls (or ``seconds`` of them) of ``case``, appending to its samples; ``tick(1)``
    after each call (the progress bar)."""
    cpu_start = time.process_time_ns()
    try:
        if case.workers:
            _time_block_in_flight(case, runs, seconds, tick)
        else:
            _time_block_serial(case, runs, seconds, tick)
    finally:
        case.cpu_ns += time.process_time_ns() - cpu_start


def _time_block_serial(case: Case, runs: int | None, seconds: float | None, tick) -> None:
    infer = case.engine.infer
    n = len(case.batches)
    i = len(case.samples_ns)
    deadline = None if seconds is None else time.perf_counter() + seconds
    done = 0
    while (runs is not None and done < runs) or (deadline is not None and time.perf_counter() < deadline):
        batch = case.batches[i % n]
        t0 = time.perf_counter_ns()
        infer(batch)
        t1 = time.perf_counter_ns()
        case.samples_ns.append(t1 - t0)
        # Outside the timed window: RSS after each run gives the peak at run granularity.
        case.rss_samples.append(rss())
        i += 1
        done += 1
        tick(1)


def _time_block_in_flight(case: Case, runs: int | None, seconds: float | None, tick) -> None:
    """One block with ``len(case.workers)`` calls in flight: a thread per worker takes the next run
    until ``runs`` are taken (or ``seconds`` pass); the block's wall time goes to ``case.wall_ns``."""
    lock = threading.Lock()
    n = len(case.batches)
    taken = [0, len(case.samples_ns)]  # runs taken in this block, index of the next input batch
    deadline = None if seconds is None else time.perf_counter() + seconds

    errors: list[BaseException] = []  # a worker's error, raised in the caller's thread (not a thread's traceback)
    stop = threading.Event()  # set by a worker that failed: the others stop too

    def loop(worker) -> None:
        try:
            _loop(worker)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def _loop(worker) -> None:
        while not stop.is_set():
            with lock:
                if (runs is not None and taken[0] >= runs) or (deadline is not None and time.perf_counter() >= deadline):
                    return
                taken[0] += 1
                batch = case.batches[taken[1] % n]
                taken[1] += 1
            t0 = time.perf_counter_ns()
            worker.infer(batch)
            t1 = time.perf_counter_ns()
            rss_now = rss()
            with lock:
                case.samples_ns.append(t1 - t0)
                case.rss_samples.append(rss_now)
                tick(1)

    threads = [threading.Thread(target=loop, args=(w,), name=f"bench-stream-{i}") for i, w in enumerate(case.workers)]
    start = time.perf_counter_ns()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C while they run: the workers stop after their call, before the engine closes
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        raise
    case.wall_ns += time.perf_counter_ns() - start
    if errors:
        raise errors[0]
