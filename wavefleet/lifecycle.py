"""The story lifecycle: states, roles, and the one table of allowed transitions.

`advance` is a pure function from a story snapshot and an event to the story's next fields, the
stages to dispatch and the event to record. `store.apply` runs it inside a Redis transaction, so a
transition is atomic; an event that does not fit the snapshot (a duplicate or stale delivery) is
rejected without changing anything, which makes delivery idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Role(StrEnum):
    PM = "pm"
    FE = "fe"
    BE = "be"
    QA = "qa"
    CTO = "cto"


class StoryState(StrEnum):
    QUEUED = "queued"
    PLANNING = "planning"
    DEVELOPING = "developing"
    TESTING = "testing"
    REVIEWING = "reviewing"
    DONE = "done"
    FAILED = "failed"
    KILLED = "killed"
    CANCELLED = "cancelled"
    HELD = "held"
    HALTED = "halted"


class Decision(StrEnum):
    GO = "GO"
    HOLD = "HOLD"
    KILL = "KILL"


TERMINAL = frozenset({StoryState.DONE, StoryState.FAILED, StoryState.KILLED, StoryState.CANCELLED})
WORKING = frozenset({StoryState.PLANNING, StoryState.DEVELOPING, StoryState.TESTING, StoryState.REVIEWING})

# The stages each working state runs; DEVELOPING runs FE and BE in parallel.
STAGES: dict[StoryState, tuple[Role, ...]] = {
    StoryState.PLANNING: (Role.PM,),
    StoryState.DEVELOPING: (Role.FE, Role.BE),
    StoryState.TESTING: (Role.QA,),
    StoryState.REVIEWING: (Role.CTO,),
}

# Every state change the fleet may make. `advance` refuses anything else, and a property test
# checks that no sequence of events leaves this table.
TRANSITIONS: frozenset[tuple[StoryState, StoryState]] = frozenset(
    {
        (StoryState.QUEUED, StoryState.PLANNING),
        (StoryState.QUEUED, StoryState.HELD),  # the intake check flagged the story: a human looks first
        (StoryState.PLANNING, StoryState.DEVELOPING),
        (StoryState.DEVELOPING, StoryState.TESTING),
        (StoryState.TESTING, StoryState.REVIEWING),
        (StoryState.TESTING, StoryState.DEVELOPING),  # QA failed: recycle with the report
        (StoryState.TESTING, StoryState.FAILED),  # QA failed in the last allowed round
        (StoryState.REVIEWING, StoryState.DONE),
        (StoryState.REVIEWING, StoryState.HELD),
        (StoryState.REVIEWING, StoryState.KILLED),
        *((s, StoryState.HALTED) for s in WORKING),  # emergency stop
        *((StoryState.HALTED, s) for s in WORKING),  # resume: back to the stage it was in
        *((s, StoryState.HELD) for s in WORKING),  # a stage needs a human (budget, safety review)
        *((StoryState.HELD, s) for s in WORKING),  # approved: resume the stage it was held in
        # Approved after a CTO HOLD: the review runs again as the human's GO, so it is delivered as a
        # model's GO is (never straight to done: that would skip the push and the worktrees' removal).
        (StoryState.HELD, StoryState.REVIEWING),  # (also above; named for its reason)
        (StoryState.HELD, StoryState.KILLED),  # rejected
        *((s, StoryState.FAILED) for s in WORKING),  # an agent gave up
        *(
            (s, StoryState.CANCELLED)
            for s in (StoryState.QUEUED, *WORKING, StoryState.HELD, StoryState.HALTED)
        ),
        *((s, StoryState.QUEUED) for s in (StoryState.FAILED, StoryState.KILLED, StoryState.CANCELLED)),
    }
)


# A stage whose worker keeps dying (or whose job keeps crashing) is given up after this many tries.
MAX_STAGE_ATTEMPTS = 5


class EventKind(StrEnum):
    ROUTE = "route"  # supervisor picked up a queued story
    INTAKE_HELD = "intake_held"  # the story's text was flagged at intake (injection, secrets): not planned
    STAGE_DONE = "stage_done"  # a worker finished a stage (payload: the stage's outcome)
    STAGE_FAILED = "stage_failed"  # a worker's agent gave up on a stage
    STAGE_LOST = "stage_lost"  # the worker running a stage died; run it again
    STAGE_HELD = "stage_held"  # a stage needs a human before it can go on (budget, safety)
    STAGE_WAITING = "stage_waiting"  # a stage failed for a reason not the story's: retried after a backoff
    STAGE_RETRY = "stage_retry"  # the backoff is over: run the waiting stage again, as a new attempt
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    RETRY = "retry"
    HALT = "halt"  # emergency stop: the story's running stages were stopped and put back
    RESUME = "resume"  # emergency stop lifted


@dataclass(frozen=True)
class Snapshot:
    """What a transition needs to know about a story."""

    state: StoryState
    round: int = 0
    pending: frozenset[Role] = frozenset()
    attempts: dict[Role, int] = field(default_factory=dict)  # all-time, so job ids never repeat
    held_from: StoryState | None = None  # the working state a held or halted story returns to
    lost: dict[Role, int] = field(default_factory=dict)  # losses of the current stage run only
    retries: dict[Role, int] = field(default_factory=dict)  # transient retries of the current stage run
    waiting: frozenset[Role] = frozenset()  # stages waiting out a backoff before their retry
    # Who approved a CTO HOLD and why (the approve's reason): the CTO stage then delivers without
    # asking the agent again. Kept until the story is retried.
    approved: str = ""


@dataclass(frozen=True)
class Event:
    kind: EventKind
    role: Role | None = None
    round: int = 0
    attempt: int = 0
    passed: bool | None = None  # QA outcome
    decision: Decision | None = None  # CTO outcome
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """The result of applying an event: the story's new snapshot and what to dispatch."""

    before: Snapshot
    after: Snapshot
    dispatch: tuple[Role, ...] = ()
    reason: str = ""

    @property
    def changed_state(self) -> bool:
        return self.before.state != self.after.state


class Rejected(Exception):
    """The event does not fit the story: a duplicate, stale or out-of-order delivery."""


def advance(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    """Apply one event to a story snapshot, or raise Rejected."""
    handler = _HANDLERS[event.kind]
    outcome = handler(snap, event, max_rounds)
    if outcome.changed_state and (snap.state, outcome.after.state) not in TRANSITIONS:
        raise AssertionError(f"undeclared transition {snap.state} -> {outcome.after.state}")
    return outcome


def _enter(snap: Snapshot, state: StoryState, *, round_: int | None = None, reason: str = "") -> Outcome:
    """Move to `state`, marking its stages pending with a fresh attempt each."""
    stages = STAGES.get(state, ())
    attempts = dict(snap.attempts)
    for role in stages:
        attempts[role] = attempts.get(role, 0) + 1
    after = replace(
        snap,
        state=state,
        round=snap.round if round_ is None else round_,
        pending=frozenset(stages),
        attempts=attempts,
        lost={},
        retries={},
        waiting=frozenset(),
        held_from=None,
    )
    return Outcome(snap, after, dispatch=stages, reason=reason)


def _route(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state is not StoryState.QUEUED:
        raise Rejected(f"already routed ({snap.state})")
    return _enter(snap, StoryState.PLANNING, round_=0)


def _intake_held(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state is not StoryState.QUEUED:
        raise Rejected(f"already routed ({snap.state})")
    held = replace(snap, state=StoryState.HELD, held_from=StoryState.QUEUED, pending=frozenset())
    return Outcome(snap, held, reason=event.reason)


def _check_current(snap: Snapshot, event: Event) -> Role:
    if snap.state not in WORKING:
        raise Rejected(f"no stage is running in state {snap.state}")
    role = event.role
    if role is None or role not in snap.pending:
        raise Rejected(f"stage {role} is not pending in state {snap.state}")
    if event.round != snap.round or event.attempt != snap.attempts.get(role):
        raise Rejected(f"stale result for {role} (round {event.round}, attempt {event.attempt})")
    return role


def _stage_done(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    role = _check_current(snap, event)
    if snap.state is StoryState.PLANNING:
        return _enter(snap, StoryState.DEVELOPING, round_=1)
    if snap.state is StoryState.DEVELOPING:
        rest = snap.pending - {role}
        if rest:  # the other half of FE ‖ BE is still working
            return Outcome(snap, replace(snap, pending=rest))
        return _enter(snap, StoryState.TESTING)
    if snap.state is StoryState.TESTING:
        return _after_qa(snap, event, max_rounds)
    return _after_review(snap, event)


def _after_qa(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if event.passed:
        return _enter(snap, StoryState.REVIEWING)
    if snap.round >= max_rounds:
        failed = replace(snap, state=StoryState.FAILED, pending=frozenset())
        return Outcome(snap, failed, reason=f"QA failed in round {snap.round} of {max_rounds}")
    return _enter(snap, StoryState.DEVELOPING, round_=snap.round + 1, reason="QA failed: recycled")


def _after_review(snap: Snapshot, event: Event) -> Outcome:
    cleared = replace(snap, pending=frozenset())
    if event.decision is Decision.GO:
        return Outcome(snap, replace(cleared, state=StoryState.DONE), reason=event.reason)
    if event.decision is Decision.HOLD:  # approving it later means GO, delivered by the CTO stage
        held = replace(cleared, state=StoryState.HELD, held_from=StoryState.REVIEWING)
        return Outcome(snap, held, reason=event.reason)
    if event.decision is Decision.KILL:
        return Outcome(snap, replace(cleared, state=StoryState.KILLED), reason=event.reason)
    raise Rejected("a review result carries no decision")


def _stage_failed(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    _check_current(snap, event)
    failed = replace(snap, state=StoryState.FAILED, pending=frozenset())
    return Outcome(snap, failed, reason=event.reason)


def _stage_lost(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    role = _check_current(snap, event)
    lost = {**snap.lost, role: snap.lost.get(role, 0) + 1}
    if lost[role] >= MAX_STAGE_ATTEMPTS:
        failed = replace(snap, state=StoryState.FAILED, pending=frozenset())
        return Outcome(snap, failed, reason=f"{role} stage lost {MAX_STAGE_ATTEMPTS} times: {event.reason}")
    attempts = {**snap.attempts, role: snap.attempts.get(role, 0) + 1}
    return Outcome(snap, replace(snap, attempts=attempts, lost=lost), dispatch=(role,), reason=event.reason)


def _stage_held(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    _check_current(snap, event)
    # `pending` is kept: approving resumes exactly the stages that were not finished.
    return Outcome(snap, replace(snap, state=StoryState.HELD, held_from=snap.state), reason=event.reason)


def _stage_waiting(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    """A transient failure: the stage stays pending on this attempt, whose result is stored, so
    nothing dispatches it until its retry is due (the supervisor keeps that schedule)."""
    role = _check_current(snap, event)
    if role in snap.waiting:
        raise Rejected(f"{role} already waits for its retry")
    retries = {**snap.retries, role: snap.retries.get(role, 0) + 1}
    return Outcome(snap, replace(snap, retries=retries, waiting=snap.waiting | {role}), reason=event.reason)


def _stage_retry(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    """A new attempt, so a late result of the one that failed is refused as stale."""
    role = _check_current(snap, event)
    if role not in snap.waiting:
        raise Rejected(f"{role} is not waiting for a retry")
    attempts = {**snap.attempts, role: snap.attempts.get(role, 0) + 1}
    after = replace(snap, attempts=attempts, waiting=snap.waiting - {role})
    return Outcome(snap, after, dispatch=(role,), reason=event.reason)


def _halt(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state not in WORKING:
        raise Rejected(f"nothing to halt in state {snap.state}")
    # pending and attempts are kept: the stopped stages go back to their queues unchanged,
    # so a halt never burns a retry.
    return Outcome(snap, replace(snap, state=StoryState.HALTED, held_from=snap.state), reason=event.reason)


def _resume(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state is not StoryState.HALTED or snap.held_from is None:
        raise Rejected(f"not halted ({snap.state})")
    after = replace(snap, state=snap.held_from, held_from=None)
    return Outcome(snap, after, dispatch=tuple(sorted(snap.pending)), reason=event.reason)


def _cancel(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state in TERMINAL:
        raise Rejected(f"cannot cancel a story that is {snap.state}")
    return Outcome(snap, replace(snap, state=StoryState.CANCELLED, pending=frozenset()), reason=event.reason)


def _approve(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state is not StoryState.HELD:
        raise Rejected(f"only a held story can be approved; this one is {snap.state}")
    if snap.held_from is StoryState.QUEUED:  # held at intake: the human's approval routes it
        return _enter(snap, StoryState.PLANNING, round_=0, reason=event.reason)
    if snap.pending and snap.held_from in WORKING:  # held mid-stage: run the unfinished stages again
        return _reenter(snap, snap.held_from, event.reason)
    if snap.held_from is not StoryState.REVIEWING:
        raise Rejected(f"a held story with nothing to resume must come from review, not {snap.held_from}")
    # A CTO HOLD: the human's approval is the review. The CTO stage runs again, without the agent,
    # to deliver it (a mid-stage hold above keeps an earlier approval, so a failed delivery is retried).
    approved = replace(snap, pending=frozenset({Role.CTO}), approved=event.reason or "approved by a human")
    return replace(_reenter(approved, StoryState.REVIEWING, event.reason), before=snap)


def _reenter(snap: Snapshot, state: StoryState, reason: str) -> Outcome:
    """Back into a working state, with a fresh attempt for each stage it had not finished."""
    attempts = {**snap.attempts, **{r: snap.attempts.get(r, 0) + 1 for r in snap.pending}}
    after = replace(
        snap, state=state, attempts=attempts, lost={}, retries={}, waiting=frozenset(), held_from=None
    )
    return Outcome(snap, after, dispatch=tuple(sorted(snap.pending)), reason=reason)


def _reject(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state is not StoryState.HELD:
        raise Rejected(f"only a held story can be rejected; this one is {snap.state}")
    killed = replace(snap, state=StoryState.KILLED, held_from=None, pending=frozenset())
    return Outcome(snap, killed, reason=event.reason)


def _retry(snap: Snapshot, event: Event, max_rounds: int) -> Outcome:
    if snap.state not in (StoryState.FAILED, StoryState.KILLED, StoryState.CANCELLED):
        raise Rejected(f"only a failed, killed or cancelled story can be retried; this one is {snap.state}")
    fresh = replace(snap, state=StoryState.QUEUED, round=0, pending=frozenset(), held_from=None, approved="")
    return Outcome(snap, fresh, reason=event.reason)


_HANDLERS = {
    EventKind.ROUTE: _route,
    EventKind.INTAKE_HELD: _intake_held,
    EventKind.STAGE_DONE: _stage_done,
    EventKind.STAGE_FAILED: _stage_failed,
    EventKind.STAGE_LOST: _stage_lost,
    EventKind.STAGE_HELD: _stage_held,
    EventKind.STAGE_WAITING: _stage_waiting,
    EventKind.STAGE_RETRY: _stage_retry,
    EventKind.CANCEL: _cancel,
    EventKind.APPROVE: _approve,
    EventKind.REJECT: _reject,
    EventKind.RETRY: _retry,
    EventKind.HALT: _halt,
    EventKind.RESUME: _resume,
}
