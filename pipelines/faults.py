"""Fault injection for the crash-safety tests: hold a run at a chosen point so a test can kill it.

Inert unless ``TRIAL_TEST_PAUSE`` is set. Its value is either a step key (the run pauses right after
that step succeeded, e.g. ``reports`` when the deliverables are written and the manifest is not), ``raw__<form>``
(the ``ingest`` step pauses right after loading that form, e.g. ``raw__ae`` in the middle of ingest) or
``publish`` (the manifest asset pauses just before it swaps the
finished work folder into place). On reaching the point the run writes ``TRIAL_TEST_PAUSE_MARKER``
(if set) and sleeps ``TRIAL_TEST_PAUSE_SECONDS`` (default 300).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

ENV = "TRIAL_TEST_PAUSE"


def pause_point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    marker = os.environ.get(f"{ENV}_MARKER")
    if marker:
        Path(marker).write_text(f"{os.getpid()} {name}\n", encoding="utf-8")
    time.sleep(float(os.environ.get(f"{ENV}_SECONDS", "300")))


@dg.success_hook(name="test_pause_after_step")
def pause_after_step(context: dg.HookContext) -> None:
    if os.environ.get(ENV) and context.step_key == os.environ[ENV]:
        pause_point(context.step_key)
