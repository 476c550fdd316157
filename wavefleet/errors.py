"""The one exception tree of WAVE, and the exit codes the CLI maps it to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of the `wave` command (sysexits.h values where one fits)."""

    OK = 0
    FAILED = 1  # an unexpected error: a bug, reported with a traceback
    USAGE = 2  # the command line itself is wrong
    INVALID_INPUT = 65  # EX_DATAERR: a story, story file or argument value is malformed
    NOT_FOUND = 66  # EX_NOINPUT: no such story or file
    UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis cannot be reached
    CONFLICT = 75  # EX_TEMPFAIL: the request clashes with the current state (try again later)
    CONFIG = 78  # EX_CONFIG: a setting or domain file is malformed


class WaveError(Exception):
    """Root of every error WAVE raises on purpose; its message is one line for the operator."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(WaveError):
    """A setting, environment variable or domain file is malformed."""

    exit_code = ExitCode.CONFIG


class InvalidInputError(WaveError):
    """A story, story file or command argument is malformed; nothing was written."""

    exit_code = ExitCode.INVALID_INPUT


class NotFoundError(WaveError):
    """The story, job or file named does not exist."""

    exit_code = ExitCode.NOT_FOUND


class ConflictError(WaveError):
    """The request does not fit the current state (a duplicate active story, a wrong-state command)."""

    exit_code = ExitCode.CONFLICT


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
