"""How ``sam2kf`` reports a failure: one line, an exit status that says whose fault it was.

Exit statuses (documented in the README):

* 0 success; ``promote``: 0 promoted, 3 champion kept, 4 lost a promotion race.
* 2 bad input: a flag, file, URL or setting the user gave is wrong (fix it and rerun).
  The library signals this with ``ValueError`` subclasses (``ConfigError``, ``DataError``,
  ``CheckpointError``, ``RegistryInputError``, ...), a missing or unreadable input file, or an
  unreachable ``--host``; commands raise :class:`InputError`.
* 1 the job failed although its inputs were accepted (training diverged, a cluster job failed,
  the disk filled up, an unexpected error).

Every message has the shape ``sam2kf <cmd>: <what input> <what is wrong>; <the fix>``. The
traceback is shown only with ``--debug`` (or ``SAM2KF_DEBUG=1``).
"""

from __future__ import annotations

import errno
import json
import os
import re

from sam2_core.download import DownloadError

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(ValueError):
    """A command-line input is wrong; the message names the flag and the fix (exit status 2)."""


class JobFailed(RuntimeError):
    """The command's inputs were fine but its work failed (exit status 1)."""


_CONNECTION_NAMES = (
    "MaxRetryError",
    "NewConnectionError",
    "ConnectTimeoutError",
    "URLError",
    "ConnectionError",
    "ProtocolError",
)
MAX_LINE = 500
_WS = re.compile(r"\s*\n\s*")


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message into one line."""
    line = _WS.sub("; ", str(text).strip()) or "(no message)"
    # Some wrapped errors (torch.load's) run to a screenful; the head names the input.
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def _connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionError) or type(cur).__name__ in _CONNECTION_NAMES:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def classify(exc: BaseException, *, command: str, host: str | None = None) -> tuple[int, str]:
    """(exit status, one-line message without the ``sam2kf <cmd>:`` prefix) for ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if host and _connection_error(exc):
        return EXIT_BAD_INPUT, (
            f"--host {host} is unreachable ({one_line(_short(exc))}); check the URL and that the "
            "KFP API answers there (e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui "
            "8080:80` and --host http://localhost:8080)"
        )
    if isinstance(exc, DownloadError):  # a released checkpoint: its message names URL and cache
        return EXIT_JOB_FAILED, one_line(str(exc))
    own_disk_full = (  # the library's own disk-full errors name the folder and the space needed
        isinstance(exc, OSError)
        and exc.errno == errno.ENOSPC
        and not exc.filename
        and exc.strerror not in (None, "", os.strerror(errno.ENOSPC))
    )
    if own_disk_full:
        return EXIT_JOB_FAILED, one_line(str(getattr(exc, "strerror", "")))
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = exc.filename or "the output folder"
        return EXIT_JOB_FAILED, (
            f"{where}: no space left on the device; free space there or choose another output "
            "location, then rerun (finished work is kept)"
        )
    if isinstance(exc, json.JSONDecodeError):
        return EXIT_BAD_INPUT, (
            f"input is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix the file or value given on the command line"
        )
    if isinstance(exc, FileNotFoundError):
        name = exc.filename or one_line(str(exc))
        return EXIT_BAD_INPUT, f"{name} does not exist; check the path or URL given"
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return EXIT_BAD_INPUT, (
            f"{exc.filename or one_line(str(exc))}: {exc.strerror or 'wrong kind of path'}; "
            "give a file where a file is expected and a folder where a folder is"
        )
    if isinstance(exc, PermissionError):
        return EXIT_BAD_INPUT, (
            f"{exc.filename or one_line(str(exc))}: permission denied; choose a location this "
            "user may read/write"
        )
    if isinstance(exc, ValueError):
        return EXIT_BAD_INPUT, one_line(str(exc))
    if isinstance(exc, SystemExit):
        return (EXIT_BAD_INPUT, one_line(str(exc.code)))
    text = one_line(str(exc)) if str(exc) else type(exc).__name__
    return EXIT_JOB_FAILED, f"{text} ({type(exc).__name__}); rerun with --debug for the traceback"


def _short(exc: BaseException) -> str:
    """The innermost useful reason of a connection failure (urllib3 nests them)."""
    text = str(exc)
    m = re.search(
        r"(Connection refused|Name or service not known|timed out|No route to host"
        r"|Temporary failure in name resolution|nodename nor servname)",
        text,
    )
    return m.group(1) if m else text[:120]
