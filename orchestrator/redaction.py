"""The one redaction: every line we print or record passes `redact`, a library's exception text included.

`redact` removes the credentials of every URI in a text (the user:password@ and secret-looking query
values) and any secret the process was told about (`remember`: the passwords in the command's URIs and
the secret environment variables), so a library that quotes a password outside a URI, or decoded, is
caught too. The sinks apply it: `install_on_std_streams` makes the driver's stdout and stderr redact what
anything writes to them (our lines, tracebacks, Ray's and Tune's log lines, worker output that Ray
forwards to the driver, which is what `ray job logs` shows), and `Tracking` redacts every tag, param,
run name and dataset it writes to MLflow.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from typing import Any, Iterable
from urllib.parse import unquote

_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_NAME = r"[\w.-]*(?:token|secret|password|passwd|pwd|key|signature|sig|credential|auth)[\w.-]*"
_SECRET_QUERY = re.compile(rf"(?i)([?&;]{_SECRET_NAME}=)[^&;#\s]*")
MASK = "***"
# Environment variables whose values are secrets wherever they show (a runtime_env dump, a library's error).
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
              "GOOGLE_APPLICATION_CREDENTIALS_JSON", "HF_TOKEN")
_MIN_URI_SECRET, _MIN_ENV_SECRET = 4, 8  # shorter values would mask ordinary words
_known: set[str] = set()


def _userinfo_end(rest: str) -> int:
    """The index of the '@' ending a URI's user:password@ part, or -1 when it has none."""
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = head.rfind("@")
    # user:pass@host, a password holding '@' or '/' (postgresql://u:pa/ss@db), or a bare token@host; not
    # an '@' in a path (file:///a@b, https://host/x@y).
    if at > 0 and ("/" not in head[:at] or ":" in head[:at].split("/", 1)[0]):
        return at
    return -1


def _strip_credentials(match: re.Match) -> str:
    rest = match["rest"]
    at = _userinfo_end(rest)
    if at >= 0:
        rest = rest[at + 1:]
    return match["scheme"] + _SECRET_QUERY.sub(rf"\1{MASK}", rest)


def redact(value: Any) -> str:
    """`value` as text with every URI's credentials removed: the user:password@ (whatever characters the
    password holds) and the values of secret-looking query parameters (?token=…, &X-Amz-Signature=…),
    and every remembered secret masked wherever it shows. The one redaction for tags, params, run names,
    console lines, job logs and the text of a library's exception that we quote."""
    text = _URI.sub(_strip_credentials, str(value))
    for secret in sorted(_known, key=len, reverse=True):  # the longest first: one may contain another
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def error_text(err: BaseException, limit: int = 200) -> str:
    """An exception's first line, redacted, for quoting in a one-line error (its type when it says nothing)."""
    lines = str(err).strip().splitlines()
    return redact(lines[0])[:limit] if lines else type(err).__name__


def secrets_in(text: str) -> set[str]:
    """The secrets the URIs in `text` hold: a password (or a bare token) and secret query values, each as
    written and percent-decoded (a library may quote either)."""
    found = set()
    for match in _URI.finditer(text):
        rest = match["rest"]
        at = _userinfo_end(rest)
        if at >= 0:
            user, colon, password = rest[:at].partition(":")
            found.add(password if colon else user)
        found.update(m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(rest))
    found |= {unquote(s) for s in found}
    return {s for s in found if len(s) >= _MIN_URI_SECRET}


def remember(texts: Iterable[str] = (), environ: dict | None = None) -> None:
    """Mask these secrets from now on, wherever they show: those in the URIs of `texts` (the command's
    arguments) and the values of the secret environment variables."""
    for text in texts:
        _known.update(secrets_in(str(text)))
    environ = os.environ if environ is None else environ
    _known.update(v for k in SECRET_ENV if len(v := environ.get(k) or "") >= _MIN_ENV_SECRET)


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written to it before passing it on, one line at a time.

    A line is held until it ends (a secret written in two pieces is still one line when it is masked)
    or until `flush`, which passes on a partial line too (a prompt, a `\\r` progress line). Everything
    else (isatty, fileno, encoding, buffering) is the wrapped stream's.
    """

    _HOLD_LIMIT = 1 << 16  # a line longer than this is passed on in pieces

    def __init__(self, stream):
        self._stream = stream
        self._held = ""
        self._lock = threading.RLock()  # re-entrant: a signal handler may print while a write is under way

    def write(self, text: str) -> int:
        with self._lock:
            held = self._held + text
            end = max(held.rfind("\n"), held.rfind("\r")) + 1
            if end == 0 and len(held) > self._HOLD_LIMIT:
                end = len(held)
            self._held = held[end:]  # before writing, so a re-entrant write sees no line twice
            if end:
                self._stream.write(redact(held[:end]))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if getattr(self._stream, "closed", False):  # at interpreter exit the wrapped stream may go first
                return
            held, self._held = self._held, ""
            if held:
                self._stream.write(redact(held))
            self._stream.flush()

    def close(self) -> None:
        """Pass on what is held; the wrapped stream stays open (it is not ours)."""
        self.flush()
        super().close()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return not getattr(self._stream, "closed", False) and self._stream.isatty()  # asked at exit too (colorama)

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return self._stream.encoding

    @property
    def errors(self):
        return self._stream.errors

    @property
    def line_buffering(self) -> bool:
        return getattr(self._stream, "line_buffering", False)

    @property
    def wrapped(self):
        return self._stream

    def __getattr__(self, name):  # buffer, mode, name, reconfigure, ...
        return getattr(self._stream, name)


def install_on_std_streams(argv: Iterable[str] = ()) -> None:
    """From now on the process's stdout and stderr redact what is written to them, and the secrets in
    `argv`'s URIs are masked wherever they show. Log handlers created earlier on the old streams (Ray's,
    at its import) are moved to the new ones. Installing twice wraps once."""
    remember(argv)
    for name in ("stdout", "stderr"):
        old = getattr(sys, name)
        if old is None or isinstance(old, RedactingStream):
            continue
        new = RedactingStream(old)
        setattr(sys, name, new)
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                    handler.setStream(new)
