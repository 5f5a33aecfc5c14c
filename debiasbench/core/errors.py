"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import re
import reprlib

#: Longest error line the CLI prints: a value of a hostile file (a YAML alias bomb expands
#: to millions of items) must not become a message of megabytes.
MESSAGE_LIMIT = 1000

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


class UserError(Exception):
    """Bad input: a name, a value or a file the user supplied. Never shown as a traceback."""


class ConfigError(UserError):
    """A run or sweep configuration value that is unknown, mistyped or out of range."""


class Unsuited(ConfigError):
    """A method paired with a dataset its own assumptions exclude (refused unless the run key
    ``allow_unsuited`` is set; a sweep lists the pair as not a job and goes on)."""


class JobBusy(UserError):
    """Another process holds the claim on this job (``debiasbench.run.claims``), or runs it
    (``debiasbench.track.heartbeat.RunHeld``)."""


class RunFailed(Exception):
    """A run that started but could not finish (diverged loss, a method's own error).

    Recorded as FAILED in the tracking store with ``reason``.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) that says what it left: the command line prints ``message``
    instead of the command's own interrupt line.

    Still a ``KeyboardInterrupt``: the store marks a run KILLED and sweeps stop as for
    any interrupt.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RunInterrupted(Interrupted):
    """Ctrl-C during a run's epochs, saying where it stopped and that a rerun resumes."""


#: What ``debiasbench run`` says on Ctrl-C outside a run's epochs.
INTERRUPTED = "interrupted; run the same command again to resume (finished epochs are kept as checkpoints)"


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown method 'vanila'; did you mean 'vanilla'? known: a, b' — one line."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    ordered = sorted(known)
    listed = ", ".join(ordered[:30]) or "none"
    if len(ordered) > 30:
        listed += f", ... ({len(ordered) - 30} more)"
    return f"unknown {kind} {name!r}{hint}{' ' if hint else '; '}known: {listed}"


def shown(value: object) -> str:
    """``repr(value)`` cut to a few items and levels: how a user's value is quoted in an
    error, so that quoting a huge or deeply nested value costs nothing."""
    return _SHORT.repr(value)


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line of at most ``limit`` characters (what the CLI prints)."""
    text = " ".join(str(message).split())
    if len(text) <= limit:
        return text
    suffix = f" ... ({len(text)} characters in all)"
    return text[:limit - len(suffix)] + suffix


#: The user-information part of a URI (``user:password@``) wherever it occurs in a text.
_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"]*)@")


def redact_credentials(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by ``***``
    (``http://user:secret@host/`` -> ``http://***@host/``): a URI or a message quoting one,
    however it is printed, logged or published."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", str(text))


def sentence(text: str) -> str:
    """``text`` ending in a full stop unless it ends in one already (or in ``?`` / ``!``):
    messages are built from parts (a reason, a hint in brackets), so the stop is added
    where they are printed, once."""
    text = text.rstrip()
    return text if not text or text.endswith((".", "?", "!")) else text + "."
