"""Run the tasks of a small dependency graph on a few threads; results come back in list order.

The ``derive`` step builds a dozen analysis tables. Most of them read only ADSL and one form, so two
can be built at once: one table's Python (NCA, per-profile) runs while another's DuckDB query runs
(DuckDB and Polars release the interpreter lock). Results are handed back in the order of the list,
whatever order the tasks finish in, so the run's events and logs read the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    key: Hashable
    needs: frozenset  # keys of tasks that must have finished first (keys not in the list are ignored)
    run: Callable[[], Any]


def run_in_order(tasks: Sequence[Task], workers: int = 2) -> Iterator[tuple[Task, Any]]:
    """Run every task once the tasks it needs have finished, at most ``workers`` at a time, and
    yield ``(task, result)`` in list order. The list must be in dependency order (a task after
    every task it needs). A task's exception is raised when its turn to be yielded comes; no task
    that needs it starts, and the tasks already running finish first."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    position = {k: i for i, k in enumerate(keys)}
    for i, t in enumerate(tasks):
        later = [k for k in t.needs if position.get(k, -1) >= i]
        if later:
            raise ValueError(f"task {t.key!r} needs {later[0]!r}, which is not before it in the list")
    futures: dict[Hashable, Future] = {}

    def finished(key: Hashable) -> bool:
        f = futures.get(key)
        return f is not None and f.done() and f.exception() is None

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="task") as pool:
        next_out = 0
        while next_out < len(tasks):
            running = sum(1 for f in futures.values() if not f.done())
            for t in tasks:
                if running >= workers:
                    break
                if t.key not in futures and all(finished(k) for k in t.needs if k in position):
                    futures[t.key] = pool.submit(t.run)
                    running += 1
            task = tasks[next_out]
            future = futures.get(task.key)
            if future is not None and future.done():
                next_out += 1
                yield task, future.result()  # raises the task's exception
                continue
            wait([f for f in futures.values() if not f.done()], return_when=FIRST_COMPLETED)
