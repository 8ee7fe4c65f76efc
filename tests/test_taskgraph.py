"""pipelines.taskgraph: dependency order, parallelism, results in list order, failures."""

import threading
import time

import pytest

from pipelines.taskgraph import Task, run_in_order


def _recorder():
    log, lock = [], threading.Lock()

    def task(key, needs=(), sleep=0.0, fail=False):
        def run():
            with lock:
                log.append(("start", key))
            time.sleep(sleep)
            if fail:
                raise RuntimeError(f"{key} failed")
            with lock:
                log.append(("end", key))
            return key.upper()

        return Task(key, frozenset(needs), run)

    return log, task


def test_a_task_starts_after_what_it_needs_and_results_come_in_list_order():
    log, task = _recorder()
    # "b" is slow and "c" needs only "a": c finishes first but is yielded after b.
    tasks = [task("a"), task("b", ["a"], sleep=0.2), task("c", ["a"]), task("d", ["b", "c"])]
    out = [(t.key, r) for t, r in run_in_order(tasks, workers=2)]
    assert out == [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    assert log.index(("end", "a")) < log.index(("start", "b"))
    assert log.index(("end", "a")) < log.index(("start", "c"))
    assert log.index(("end", "c")) < log.index(("end", "b"))  # they ran at the same time
    assert log.index(("end", "b")) < log.index(("start", "d"))


def test_at_most_workers_at_a_time():
    active, peak, lock = [0], [0], threading.Lock()

    def run():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1

    tasks = [Task(i, frozenset(), run) for i in range(6)]
    assert len(list(run_in_order(tasks, workers=2))) == 6
    assert peak[0] == 2


def test_a_failure_is_raised_in_its_turn_and_what_needs_it_never_starts():
    log, task = _recorder()
    tasks = [task("a"), task("b", ["a"], fail=True), task("c", ["b"]), task("d", ["a"])]
    seen = []
    with pytest.raises(RuntimeError, match="b failed"):
        for t, _ in run_in_order(tasks, workers=2):
            seen.append(t.key)
    assert seen == ["a"]
    assert ("start", "c") not in log


def test_the_list_must_be_in_dependency_order():
    _, task = _recorder()
    with pytest.raises(ValueError, match="'a' needs 'b'"):
        list(run_in_order([task("a", ["b"]), task("b")]))
    with pytest.raises(ValueError, match="unique"):
        list(run_in_order([task("a"), task("a")]))
