"""Structured logging: one JSON object per line, carrying the trace and interaction ids.

Secrets never reach a log line: a redaction filter masks bearer tokens, JWTs, passwords,
client secrets and long digit runs (account numbers) in messages and extra fields.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import sys
import time
from typing import Any

from opentelemetry import trace

# The FAPI header that carries a call's interaction id, in and out of every service.
INTERACTION_ID_HEADER = "x-fapi-interaction-id"
# Set per call by the server interceptors; read by the formatter.
interaction_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("interaction_id", default=None)

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/-]+=*")
_SECRET_KV = re.compile(
    r"(?i)(password|passwd|secret|client_secret|refresh_token|access_token|code_verifier|one_time_code|otp)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)"
)
_LONG_DIGITS = re.compile(r"\b\d{10,}\b")
# What each pattern above cannot match without, in one search: a string lacking all of it
# is left as it is. Nearly every string logged is such a string, and one search costs a
# fraction of the four substitutions (the gateway writes an audit record of eight strings per
# call). The alternatives: _JWT's "eyJ", _SECRET_KV's separator, _BEARER's word, _LONG_DIGITS.
_MAY_HOLD_SECRET = re.compile(r"eyJ|[:=]|(?i:bearer)|\d{10}")
_SENSITIVE_KEYS = frozenset(
    {
        "password",
        "client_secret",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "code_verifier",
        "one_time_code",
        "otp",
        "totp_secret",
        "private_key",
    }
)
_RECORD_OWN_ATTRS = vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
_STD_ATTRS = frozenset(_RECORD_OWN_ATTRS) | {"message", "asctime"}
# LogRecord.__init__ sets its own attributes first, always these many, and a logger adds the
# ``extra`` fields after them: a record's extras start at this position of its __dict__.
_STD_COUNT = len(_RECORD_OWN_ATTRS)
# One encoder for every line (json.dumps with options builds a new one per call).
_JSON = json.JSONEncoder(default=str, separators=(",", ":"))


def redact(text: str) -> str:
    """Mask tokens, secrets and full account numbers in a free-text string."""
    return _substitute_secrets(text) if _may_hold_secret(text) else text


def _substitute_secrets(text: str) -> str:
    """Every redaction pattern substituted in ``text``, whether it can match or not."""
    text = _JWT.sub("[REDACTED-JWT]", text)
    text = _BEARER.sub("Bearer [REDACTED]", text)
    text = _SECRET_KV.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED]", text)
    return _LONG_DIGITS.sub(lambda m: "•" * 4 + m.group(0)[-4:], text)


def _may_hold_secret(text: str) -> bool:
    """False only when none of the redaction patterns can match ``text``."""
    return _MAY_HOLD_SECRET.search(text) is not None


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in _SENSITIVE_KEYS:
        return "[REDACTED]"
    if isinstance(value, str):
        return redact(value)
    return value


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with trace id, span id and interaction id."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self._service = service_name
        # The timestamp up to the second, formatted once per second (strftime is ~3 us).
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        interaction_id = interaction_id_var.get()
        if interaction_id:
            entry["interaction_id"] = interaction_id
        for key, value in itertools.islice(record.__dict__.items(), _STD_COUNT, None):
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = _redact_value(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return _JSON.encode(entry)


class ConsoleFormatter(logging.Formatter):
    """Readable single-line format for the local mesh (`make up`), ending with the call's
    trace and interaction ids when there is a call (as in the JSON format)."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self._service = service_name

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(
            f"{k}={_redact_value(k, v)}"
            for k, v in record.__dict__.items()
            if k not in _STD_ATTRS and not k.startswith("_")
        )
        line = f"{stamp} {record.levelname[0]} {self._service:<10} {redact(record.getMessage())}"
        if extras:
            line += f"  {extras}"
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            line += f"  trace_id={span_context.trace_id:032x}"
        interaction_id = interaction_id_var.get()
        if interaction_id and "interaction_id" not in record.__dict__:
            line += f"  interaction_id={interaction_id}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure_logging(service_name: str, level: str = "INFO", fmt: str = "json") -> None:
    """Install the process-wide log handler; called once from a process's main."""
    # Neither format shows the caller's source line, thread or process: logging need not
    # look them up for every record (the logging HOWTO's "Optimization"; the gateway writes
    # an audit record per call, and finding the caller walks the stack).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service_name) if fmt == "json" else ConsoleFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter stays at WARNING unless asked for.
    for noisy in ("sqlalchemy", "alembic", "asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
