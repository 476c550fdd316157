"""The one exception tree of WAVE, and the exit codes the CLI maps it to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of the `wave` command (sysexits.h values where one fits)."""

    OK = 0
    FAILED = 1  # an unexpected error: a bug, reported with a traceback
    USAGE = 2  # the command line itself is wrong
    FINDINGS = 3  # `wave monitor --once`: a finding is open (cron and CI alert on it)
    PREFLIGHT_FAILED = 4  # `wave preflight`: a probe failed; an autonomous worker: no matching pass
    INVALID_INPUT = 65  # EX_DATAERR: a story, story file or argument value is malformed
    NOT_FOUND = 66  # EX_NOINPUT: no such story or file
    UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis cannot be reached
    OUTPUT_FAILED = 74  # EX_IOERR: our output could not be written (a full disk, a failing device)
    CONFLICT = 75  # EX_TEMPFAIL: the request clashes with the current state (try again later)
    CONFIG = 78  # EX_CONFIG: a setting or domain file is malformed
    BROKEN_PIPE = 141  # the reader of our output went away (`wave status | head`): as a shell reports SIGPIPE


class WaveError(Exception):
    """Root of every error WAVE raises on purpose; its message is one line for the operator."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(WaveError):
    """A setting, environment variable or domain file is malformed."""

    exit_code = ExitCode.CONFIG


class PreflightError(WaveError):
    """Autonomous mode without a passing `wave preflight` for the settings in force."""

    exit_code = ExitCode.PREFLIGHT_FAILED


class InvalidInputError(WaveError):
    """A story, story file or command argument is malformed; nothing was written."""

    exit_code = ExitCode.INVALID_INPUT


class NotFoundError(WaveError):
    """The story, job or file named does not exist."""

    exit_code = ExitCode.NOT_FOUND


class ConflictError(WaveError):
    """The request does not fit the current state (a duplicate active story, a wrong-state command)."""

    exit_code = ExitCode.CONFLICT


class CorruptStoryError(WaveError):
    """A story's hash in Redis cannot be read (edited by hand, or written by an incompatible version)."""

    exit_code = ExitCode.INVALID_INPUT


class RedisUnavailableError(WaveError):
    """The fleet's Redis cannot be reached or refused our credentials."""

    exit_code = ExitCode.UNAVAILABLE


class StageError(WaveError):
    """An agent could not complete a stage; the story fails with this message as its reason."""


class HoldStory(StageError):
    """The stage cannot go on without a human (a budget is exhausted, an action awaits review):
    the story is held, and `wave approve` resumes it at this stage."""


class GitError(StageError):
    """A git command on a domain's repository failed."""


class LLMError(StageError):
    """A model call could not be made; a stage that meets it fails with this message."""

    exit_code = ExitCode.UNAVAILABLE


class ProviderError(LLMError):
    """A model provider failed the call (overloaded, server error, timeout, malformed reply, bad key).

    `counts` says whether it is the provider's fault (it then counts towards the fallback breaker);
    a request the provider refused as invalid does not count.
    """

    def __init__(
        self, provider: str, message: str, *, counts: bool = True, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.counts = counts
        self.retry_after_s = retry_after_s


class ProviderRateLimitedError(ProviderError):
    """The provider itself said to slow down (HTTP 429, gRPC RESOURCE_EXHAUSTED)."""


class RateLimitedError(LLMError):
    """The fleet's own rate limit for a provider would make this call wait longer than allowed."""

    exit_code = ExitCode.CONFLICT


class NoProviderError(LLMError):
    """No provider can take the call: none has a key (and offline is refused) or all are failing."""


class BudgetExceededError(HoldStory):
    """A hard budget (story, domain per day, or global per day) would be passed: the story is held."""

    exit_code = ExitCode.CONFLICT

    def __init__(self, message: str, *, scope: str = "") -> None:
        super().__init__(message)
        self.scope = scope


class TransientError(StageError):
    """A stage failed for a reason that is not the story's (a provider outage that outlasted the
    fallback, a 429 storm, a sandbox that cannot start): the stage is run again after a backoff,
    and the story fails with this message only once the retries (a setting) are spent."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SandboxUnavailableError(TransientError):
    """The sandbox a command must run in cannot start on this machine right now."""


class SandboxLimitError(StageError):
    """A command hit its sandbox's memory or process limit (a memory hog, a fork bomb): it was killed
    and the stage fails with that reason. Not transient: running it again would hit it again."""


class ProvidersFailingError(NoProviderError):
    """Every provider that has a key is failing (their breakers are open): not the story's fault,
    unlike a NoProviderError for want of any key, which is configuration."""


def as_transient(exc: StageError) -> TransientError | None:
    """The transient failure `exc` is, or None if it is the story's own (or needs a human).

    The one place that decides which failures are retried instead of failing the story."""
    if isinstance(exc, TransientError):
        return exc
    if isinstance(exc, HoldStory):
        return None
    if isinstance(exc, ProviderError) and exc.counts:  # outlasted the router's fallback
        return TransientError(str(exc), retry_after_s=exc.retry_after_s)
    if isinstance(exc, ProvidersFailingError | RateLimitedError):
        return TransientError(str(exc))
    return None


class ToolError(StageError):
    """An agent's tool call cannot be done (a path out of the worktree, a missing file, an ambiguous
    edit). In the tool loop the model sees the message and goes on; elsewhere it fails the stage."""


class LoopStopped(StageError):
    """A tool loop's guard stopped it (iteration or wall-clock cap, a stuck model); the message is why."""

    def __init__(self, message: str, *, guard: str) -> None:
        super().__init__(message)
        self.guard = guard


class SafetyBlocksError(StageError):
    """The safety gate refused too many of a stage's tool calls (`safety.blocks_per_stage`): the
    stage fails rather than let the agent keep trying variants of a refused action."""


class SlackDeliveryError(WaveError):
    """Slack did not take a message. ``kind``: ``auth`` (the token or webhook was refused: every
    message would be, so it is reported once), ``transient`` (an outage, a 5xx, 429s past the SDK's
    retries: tried again after a backoff) or ``rejected`` (this message only: a bad channel, too long)."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
