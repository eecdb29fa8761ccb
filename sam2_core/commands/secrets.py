"""The KFP bearer token: read from a file or the environment (never argv), masked in logs.

A token on the command line is visible to every user of the machine (``ps``), lands in shell
history and in the CronJob's logged command, so ``sam2kf submit|schedule`` read it from
``--token-file`` or the environment variables in :data:`TOKEN_ENV` (in the CronJob: a
``secretKeyRef`` env). Every value read is registered with :class:`MaskSecrets`, which the CLI
installs on its log handler so no log line can carry it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sam2_core.commands.errors import InputError

#: Environment variables holding the token, first found wins.
TOKEN_ENV = ("SAM2KF_KFP_TOKEN", "KFP_TOKEN")
MASK = "***"
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Mask ``value`` in every later log line (values shorter than 4 characters are ignored)."""
    if len(value) >= 4:
        _SECRETS.add(value)


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        text = text.replace(secret, MASK)
    return text


class MaskSecrets(logging.Filter):
    """Log filter replacing registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = mask(record.getMessage())
            record.args = None
        return True


def read_token(*, token_file: str | None) -> str | None:
    """The KFP token from ``--token-file`` or :data:`TOKEN_ENV`; ``None`` when none is given.

    A named file that is missing or empty is an :class:`InputError` (a typo must not silently
    send unauthenticated requests).
    """
    token: str | None = None
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise InputError(
                f"--token-file {token_file}: cannot read it ({e.strerror}); give the path of a "
                "file holding the bearer token (e.g. a mounted Secret)"
            ) from None
        if not token:
            raise InputError(
                f"--token-file {token_file}: the file is empty; write the token into it, e.g. "
                "`kubectl create token <sa> > FILE`"
            )
    else:
        for name in TOKEN_ENV:
            if os.environ.get(name, "").strip():
                token = os.environ[name].strip()
                break
    if token:
        register_secret(token)
    return token


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of any ``--token``/``--token=`` option and known secrets masked."""
    out: list[str] = []
    hide_next = False
    for item in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif item == "--token":
            out.append(item)
            hide_next = True
        elif item.startswith("--token="):
            out.append("--token=" + MASK)
        else:
            out.append(mask(item))
    return out
