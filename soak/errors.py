"""User-facing errors: each carries a message a person can act on and an exit code.

Exit codes: 0 pass, 1 criteria failed, 2 usage or profile error, 3 the run itself could
not be carried out, 4 inconclusive (the evidence does not carry a verdict either way).

The CLI catches `SoakError` and prints its message, never a traceback.
"""

EXIT_PASS = 0
EXIT_CRITERIA_FAILED = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_INCONCLUSIVE = 4


class SoakError(Exception):
    """Base of every error soak reports to its user."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProfileError(SoakError):
    """The profile (or a command-line override of it) is invalid: exit code 2."""

    exit_code = EXIT_USAGE


class UsageError(SoakError):
    """A command was called with arguments that cannot work: exit code 2."""

    exit_code = EXIT_USAGE


class RunError(SoakError):
    """The run itself could not be carried out (target down, ports busy): exit code 3."""

    exit_code = EXIT_RUN_FAILED


class StorageError(RunError):
    """The run directory cannot be written (disk full, read-only, quota): exit code 3.

    Raised by every writer of the run directory; the run ends with status `failed`
    and what was written so far is kept for `soak report`.
    """


class OutputClosed(RunError):
    """soak's standard output was closed under it (`soak run ... | head`): exit code 3."""


class RunDirError(SoakError):
    """A run directory is missing, unreadable or of an unknown format: exit code 2."""

    exit_code = EXIT_USAGE
