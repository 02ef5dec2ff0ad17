"""The errors pytest-lfm raises, with what code and tests read as attributes (never parsed from a message)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class LfmError(Exception):
    """The root of pytest-lfm's errors."""


class ServerStartError(LfmError, RuntimeError):
    """The server did not become healthy: the message has the command, elapsed time, exit code, log tail, fixes."""

    def __init__(self, message: str, *, command: Sequence[str] = (), exit_code: int | None = None,
                 log_path: Path | None = None) -> None:
        super().__init__(message)
        self.command = list(command)
        self.exit_code = exit_code
        self.log_path = log_path


class ServerCrashedError(LfmError, RuntimeError):
    """The server exited after it had started (the message has the exit code and the log tail), or a server
    someone else started stopped answering."""

    def __init__(self, message: str, *, exit_code: int | None = None, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_path = log_path


class ExternalServerError(LfmError, RuntimeError):
    """The server at --lfm-base-url cannot be tested: unreachable, or not an OpenAI-compatible sglang server."""

    def __init__(self, message: str, *, base_url: str) -> None:
        super().__init__(message)
        self.base_url = base_url


class KnownFailure(AssertionError):
    """A failure that is a known upstream bug, of the size it is known to have: the only failure the xfail mark of
    ``checks.known_failure_only`` expects."""


class RuntimeLeftoverWarning(UserWarning):
    """A runtime's processes or GPU memory outlived its stop()."""


class MicroBuildError(LfmError, RuntimeError):
    """A micro checkpoint could not be built (the message has the build's last output and the command to rerun)."""

    def __init__(self, message: str, *, name: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.exit_code = exit_code
