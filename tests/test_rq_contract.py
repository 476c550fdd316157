"""The contract with RQ's internals: every RQ method the worker overrides or calls, pinned as tested.

The worker subclasses RQ's Worker, Queue and IntermediateQueue and hooks their private methods
(`_handle_stopped_job`, `wait_for_horse`, ...) and attributes (`_horse_pid`, `_stopped_job_id`). RQ
may change any of them in a minor release without notice, so pyproject pins rq to the minor version
tested and this file fails, naming what moved, if the installed RQ differs from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import rq
import rq.utils
from rq import Queue, Worker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from workers.worker import StrayCheck, WaveQueue, WaveWorker

TESTED_RQ = "3.0.0"
UPGRADE = (
    f"RQ {rq.__version__} differs from the tested {TESTED_RQ} in {{what}}. Upgrading RQ is a deliberate "
    "step: read RQ's new code of that method (and its callers in RQ's worker loop), adapt "
    "workers/worker.py, run tests/test_halt.py and benchmarks/halt_latency.py, then update the pin in "
    "pyproject.toml and this file's tables."
)

# inspect.signature(...) of rq 3.0.0, as str.
SIGNATURES: dict[str, str] = {
    "Worker.__init__": (
        "(self, queues: 'str | Queue | Sequence[str] | Sequence[Queue]', name: 'str | None' = None, "
        "default_result_ttl=500, connection: 'Redis | None' = None, exception_handlers=None, "
        "maintenance_interval: 'int' = 600, default_worker_ttl: 'int | None' = None, "
        "worker_ttl: 'int | None' = None, job_class: 'type[Job] | str | None' = None, "
        "queue_class: 'type[Queue] | str | None' = None, log_job_description: 'bool' = True, "
        "job_monitoring_interval=30, disable_default_exception_handler: 'bool' = False, "
        "prepare_for_work: 'bool' = True, serializer: 'Serializer | str | None' = None, "
        "work_horse_killed_handler: 'Callable[[Job, int, int, struct_rusage], None] | None' = None)"
    ),
    "Worker.request_stop": "(self, signum, frame)",
    "Worker.dequeue_job_and_maintain_ttl": (
        "(self, timeout: 'int | None', max_idle_time: 'int | None' = None) -> 'tuple[Job, Queue] | None'"
    ),
    "Worker.execute_job": "(self, job: 'Job', queue: 'Queue')",
    "Worker.prepare_execution": "(self, job: 'Job') -> 'Execution'",
    "Worker.fork_work_horse": "(self, job: 'Job', queue: 'Queue')",
    "Worker.monitor_work_horse": "(self, job: 'Job', queue: 'Queue', execution: 'Execution')",
    "Worker.wait_for_horse": "(self) -> 'tuple[int | None, int | None, struct_rusage | None]'",
    "Worker._handle_stopped_job": "(self, job: 'Job', queue: 'Queue', execution: 'Execution')",
    "Worker.cleanup_execution": (
        "(self, job: 'Job', pipeline: 'Pipeline', execution: 'Execution | None' = None)"
    ),
    "Worker.main_work_horse": "(self, job: 'Job', queue: 'Queue')",
    "Worker.set_state": "(self, state: 'str', pipeline: 'Pipeline | None' = None)",
    "Worker.heartbeat": "(self, timeout: 'int | None' = None, pipeline: 'Pipeline | None' = None)",
    "Worker.work": (
        "(self, burst: 'bool' = False, logging_level: 'str | None' = None, "
        "date_format: 'str' = '%H:%M:%S', log_format: 'str' = '%(asctime)s %(message)s', "
        "max_jobs: 'int | None' = None, max_idle_time: 'int | None' = None, "
        "with_scheduler: 'bool' = False, "
        "dequeue_strategy: 'DequeueStrategy' = <DequeueStrategy.DEFAULT: 'default'>) -> 'bool'"
    ),
    "Queue.__init__": (
        "(self, name: 'str' = 'default', connection: 'Redis | None' = None, "
        "default_timeout: 'int | None' = None, is_async: 'bool' = True, "
        "job_class: 'str | type[Job] | None' = None, serializer: 'Serializer | str | None' = None, "
        "death_penalty_class: 'type[BaseDeathPenalty] | None' = "
        "<class 'rq.timeouts.UnixSignalDeathPenalty'>, "
        "**kwargs)"
    ),
    "Queue.push_job_id": (
        "(self, job_id: 'str', pipeline: 'Pipeline | None' = None, at_front: 'bool' = False)"
    ),
    "Queue.enqueue_call": (
        "(self, func: 'FunctionReferenceType', args: 'tuple | list | None' = None, "
        "kwargs: 'dict | None' = None, timeout: 'int | None' = None, result_ttl: 'int | None' = None, "
        "ttl: 'int | None' = None, failure_ttl: 'int | None' = None, description: 'str | None' = None, "
        "depends_on: 'JobDependencyType | None' = None, job_id: 'str | None' = None, "
        "at_front: 'bool' = False, meta: 'dict | None' = None, retry: 'Retry | None' = None, "
        "repeat: 'Repeat | None' = None, on_success: 'Callback | Callable[..., Any] | None' = None, "
        "on_failure: 'Callback | Callable[..., Any] | None' = None, "
        "on_stopped: 'Callback | Callable[..., Any] | None' = None, "
        "rate_limit: 'RateLimit | None' = None, pipeline: 'Pipeline | None' = None, "
        "unique: 'bool' = False, webhooks: 'Sequence[Webhook] | None' = None) -> 'Job'"
    ),
    "Queue.acquire_maintenance_lock": "(self) -> 'bool'",
    "IntermediateQueue.__init__": "(self, queue_key: 'str', connection: 'Redis')",
    "IntermediateQueue.should_be_cleaned_up": "(self, job_id: 'str') -> 'bool'",
    "IntermediateQueue.get_first_seen": "(self, job_id: 'str') -> 'datetime | None'",
    "Job.set_status": "(self, status: 'JobStatus', pipeline: 'Pipeline | None' = None) -> 'None'",
    "Job.delete": (
        "(self, pipeline: 'Pipeline | None' = None, remove_from_queue: 'bool' = True, "
        "delete_dependents: 'bool' = False)"
    ),
    "Job.key_for": "(job_id: 'str') -> 'str'",
    "Job.fetch": "(id: 'str', connection: 'Redis | None' = None, serializer=None) -> 'Job'",
    "Job.get_status": "(self, refresh: 'bool' = True) -> 'JobStatus'",
    "Job.latest_result": "(self, timeout: 'int' = 0) -> 'Result | None'",
    "utils.now": "() -> 'datetime.datetime'",
}

# What our overrides and private reads rely on RQ's own code to do: (why, RQ function, text in its source).
BEHAVIOUR: list[tuple[str, str, str]] = [
    ("the work loop runs each job through execute_job", "Worker.work", "self.execute_job(job, queue)"),
    (
        "the loop dequeues through dequeue_job_and_maintain_ttl",
        "Worker.work",
        "dequeue_job_and_maintain_ttl(",
    ),
    ("the horse's pid is kept in _horse_pid", "Worker.fork_work_horse", "self._horse_pid = child_pid"),
    ("the horse runs main_work_horse", "Worker.fork_work_horse", "self.main_work_horse(job, queue)"),
    ("the horse leads its own process group", "Worker.fork_work_horse", "os.setpgrp()"),
    ("the monitor reaps through wait_for_horse", "Worker.monitor_work_horse", "self.wait_for_horse()"),
    ("a stop is seen by _stopped_job_id", "Worker.monitor_work_horse", "self._stopped_job_id == job.id"),
    ("a stopped job goes to _handle_stopped_job", "Worker.monitor_work_horse", "self._handle_stopped_job("),
    ("the monitor clears _horse_pid after the reap", "Worker.monitor_work_horse", "self._horse_pid = 0"),
]

# Properties of RQ's Queue that the worker and the dispatcher read (WaveQueue overrides the first).
PROPERTIES = [
    "Queue.intermediate_queue",
    "Queue.intermediate_queue_key",
    "Queue.registry_cleaning_key",
    "Queue.key",
    "Queue.failed_job_registry",
]
OWNERS: dict[str, Any] = {
    "Worker": Worker,
    "Queue": Queue,
    "IntermediateQueue": IntermediateQueue,
    "Job": Job,
    "utils": rq.utils,
}


def _rq(name: str) -> Any:
    """RQ's `Owner.attribute`, failing with what to do if this RQ no longer has it."""
    owner, attribute = name.split(".")
    found = inspect.getattr_static(OWNERS[owner], attribute, None)
    assert found is not None, UPGRADE.format(what=f"{name}, which it no longer has")
    return getattr(OWNERS[owner], attribute) if not isinstance(found, property) else found


def _parameters(function: Callable[..., Any]) -> list[tuple[str, object, object]]:
    """A signature as the caller sees it: names, kinds and defaults (annotations are ours to choose)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def _overrides() -> list[tuple[str, type, type]]:
    """(name, our class, RQ base class) for every RQ attribute our subclasses redefine. Constructors
    are left out: RQ never builds our classes, we call its constructors (pinned above)."""
    found = []
    for ours, base in ((WaveWorker, Worker), (WaveQueue, Queue), (StrayCheck, IntermediateQueue)):
        for name in vars(ours):
            if hasattr(base, name) and not name.startswith("__"):
                found.append((name, ours, base))
    return found


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_rq_signatures_are_those_tested(name: str) -> None:
    found = str(inspect.signature(_rq(name)))
    assert found == SIGNATURES[name], UPGRADE.format(what=f"the signature of {name}")


@pytest.mark.parametrize(("what", "function", "text"), BEHAVIOUR, ids=[b[0] for b in BEHAVIOUR])
def test_rq_still_calls_what_our_overrides_hook(what: str, function: str, text: str) -> None:
    assert text in inspect.getsource(_rq(function)), UPGRADE.format(what=f"{function}: {what}")


@pytest.mark.parametrize("name", PROPERTIES)
def test_rq_attributes_we_read_still_exist(name: str) -> None:
    assert isinstance(_rq(name), property), UPGRADE.format(what=f"{name}, no longer a property")


@pytest.mark.parametrize(
    ("name", "ours", "base"), _overrides(), ids=[f"{o.__name__}.{n}" for n, o, _ in _overrides()]
)
def test_our_overrides_match_rq_and_are_pinned(name: str, ours: type, base: type) -> None:
    qualified = f"{base.__name__}.{name}"
    assert qualified in SIGNATURES or name == "intermediate_queue", (
        f"{ours.__name__}.{name} overrides {qualified}, which this file does not pin: add its signature"
    )
    if name == "intermediate_queue":  # a property both sides
        assert isinstance(vars(ours)[name], property)
        return
    assert _parameters(getattr(ours, name)) == _parameters(_rq(qualified)), (
        f"{ours.__name__}.{name} takes other parameters than {qualified}: RQ would call it wrongly"
    )


def test_rq_installed_is_the_pinned_minor_version() -> None:
    assert rq.__version__.split(".")[:2] == TESTED_RQ.split(".")[:2], UPGRADE.format(what="its version")
