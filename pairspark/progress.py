"""One progress line of our own for long Spark stages, through the "pairspark" logger.

Spark's console progress bars ([Stage 3:====>  (2 + 2) / 8]) get mixed into the CLI's log
lines, so build_session turns them off unless --verbose. In their place, while a pipeline
stage runs, a daemon thread polls the SparkContext's status tracker and, once one of the
block's Spark stages has run for a while, logs at most every so often a line such as

    classify: 12/40 tasks, ~90,000/300,000 items, 7,400 items/s, ETA 28s

Items are estimated from the share of completed tasks (when the caller knows the total).
Short stages stay silent. Without a SparkContext (Spark Connect) it does nothing, and it
never raises into the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("pairspark")


@contextmanager
def progress(
    spark: Any,
    name: str,
    total_items: int | None = None,
    *,
    poll_seconds: float = 2.0,
    min_stage_seconds: float = 5.0,
    log_every_seconds: float = 10.0,
) -> Iterator[None]:
    """Log progress of the Spark jobs this block starts (in the caller's job group)."""
    watcher = _Watcher.start(
        spark, name, total_items, poll_seconds, min_stage_seconds, log_every_seconds
    )
    try:
        yield
    finally:
        if watcher is not None:
            watcher.stop()


class _Watcher:
    def __init__(self, tracker, group, name, total_items, poll, min_stage, log_every):
        self.tracker = tracker
        self.group = group  # None: the jobs outside any job group
        self.name = name
        self.total_items = total_items
        self.poll = poll
        self.min_stage = min_stage
        self.log_every = log_every
        self.before = set(tracker.getActiveJobsIds())  # someone else's: not counted
        self.seen: dict[int, tuple[float, int]] = {}  # stage id -> (first seen, tasks done then)
        self.last_line = float("-inf")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"progress-{name}", daemon=True)

    @classmethod
    def start(cls, spark, name, total_items, poll, min_stage, log_every) -> _Watcher | None:
        if spark is None:
            return None
        try:
            sc = spark.sparkContext  # raises under Spark Connect
            group = sc.getLocalProperty("spark.jobGroup.id")  # the caller thread's
            watcher = cls(sc.statusTracker(), group, name, total_items, poll, min_stage, log_every)
            watcher.thread.start()
            return watcher
        except Exception:
            return None

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self.done.wait(self.poll):
                self._poll(time.monotonic())
        except Exception as exc:  # e.g. the session stopped: only the progress lines are lost
            log.debug("%s: progress stopped: %s", self.name, exc)

    def _poll(self, now: float) -> None:
        t = self.tracker
        jobs = (set(t.getActiveJobsIds()) - self.before) & set(t.getJobIdsForGroup(self.group))
        ours: set[int] = set()
        for job in jobs:
            info = t.getJobInfo(job)
            if info is not None:
                ours.update(info.stageIds)
        long_running = []
        for stage in sorted(ours & set(t.getActiveStageIds())):
            info = t.getStageInfo(stage)
            if info is None:
                continue
            first, done_then = self.seen.setdefault(stage, (now, info.numCompletedTasks))
            if now - first >= self.min_stage:
                long_running.append((info, first, done_then))
        if long_running and now - self.last_line >= self.log_every:
            self.last_line = now
            log.info("%s", self._line(long_running, now))

    def _line(self, stages, now: float) -> str:
        done = sum(info.numCompletedTasks for info, _, _ in stages)
        total = sum(info.numTasks for info, _, _ in stages)
        # Tasks per second since first seen, summed over the stages running side by side.
        rate = sum((i.numCompletedTasks - d0) / max(now - t0, 1e-3) for i, t0, d0 in stages)
        parts = [f"{done:,}/{total:,} tasks"]
        if self.total_items and total:
            per_task = self.total_items / total
            parts.append(f"~{round(done * per_task):,}/{self.total_items:,} items")
            if rate > 0:
                parts.append(f"{rate * per_task:,.0f} items/s")
        if rate > 0:
            parts.append(f"ETA {_duration((total - done) / rate)}")
        return f"{self.name}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
