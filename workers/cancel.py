"""Cancelling one story's running stage: killed with everything it started, never put back, nothing handed on.

The halt's shape for one story (wavefleet/halt.py): `wave cancel` commits the transition, then
publishes on the cancel channel; each worker's halt listener, on the same subscription, calls
`StageCanceller.on_cancel`. The story's state is the truth and the message only a nudge: the
running stage is killed only when its story no longer waits for it, so a late message cannot kill
the stage of a story retried meanwhile, and after a reconnect (a message may have been lost) the
running stage is checked the same way. A stage that has not started yet refuses by itself
(`stage.is_current` in `run_stage`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.client import Pipeline
from rq.job import Job, JobStatus

from wavefleet import logs
from wavefleet.errors import WaveError
from wavefleet.messages import StageJob

from . import runtime, stage

if TYPE_CHECKING:
    from .worker import HaltGate, WaveWorker


class StageCanceller:
    """This worker's side of `wave cancel`, called from the halt listener's thread."""

    def __init__(self, rt: runtime.Runtime, gate: HaltGate) -> None:
        self.rt, self.gate = rt, gate
        self.log = logs.get()

    def on_cancel(self, story_id: str | None) -> None:
        """`story_id` was cancelled, or (None) a cancel may have been missed: kill the running
        stage if its story no longer waits for it."""
        with self.gate.lock:
            worker = self.gate.worker
            job = worker.current_job if worker is not None and worker.running_job_id() else None
        if worker is None or job is None:
            return
        try:
            wanted = StageJob.from_kwargs(job.kwargs)
        except ValueError as exc:  # unreadable: leave the stage alone
            self.log.error("cannot check a running stage against its story", job=job.id, error=str(exc))
            return
        if story_id not in (None, wanted.story_id):
            return
        why = self._unwanted(job, wanted)
        if why is None:
            return
        with self.gate.lock:  # the same horse still runs it (not a new job taken meanwhile)
            if worker.current_job is not job or not worker.stop_for_cancel(why):
                return
        self.log.warning("stage cancelled: killed", story=wanted.story_id, job=job.id, why=why)

    def _unwanted(self, job: Job, wanted: StageJob) -> str | None:
        """Why the story no longer waits for this stage, or None if it still does."""
        try:
            record = self.rt.store.find(wanted.story_id)
        except WaveError as exc:  # unreadable: leave the stage alone
            self.log.error("cannot check a running stage against its story", job=job.id, error=str(exc))
            return None
        if record is None:
            return "the story is gone"
        if stage.is_current(record, wanted.role, wanted.round, wanted.attempt):
            return None
        return f"the story is {record.state} and no longer waits for this stage"


def drop_cancelled(worker: WaveWorker, job: Job, execution: Any, why: str, pipe: Pipeline) -> None:
    """Add to `pipe` the end of a stage killed by a cancel: out of RQ's started registry and the
    running list, marked canceled (not failed: nothing is retried), and noted in the story's
    history. Not requeued, unlike a halt; its result, had it got one in, is refused as stale."""
    worker.cleanup_execution(job, pipeline=pipe, execution=execution)
    job.set_status(JobStatus.CANCELED, pipeline=pipe)
    store = worker.rt.store
    pipe.hdel(store.keys.running(), job.id)
    killed = StageJob.from_kwargs(job.kwargs)  # read before: the cancel checked it
    reason = f"stage killed by {worker.rt.identity}: {why}"
    store.record_stage_cancelled(pipe, killed.story_id, killed.role.value, killed.round, reason)
