"""Structured logs: JSON lines with trace ids, and nothing secret in them."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from meshlib.logs import JsonFormatter, _substitute_secrets, interaction_id_var, redact


def test_redaction_masks_tokens_secrets_and_account_numbers() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwMSJ9.c2lnbmF0dXJl"
    text = f"auth Bearer abc.def token={jwt} password=hunter2 client_secret: s3cr3t acct 12345678901234"
    cleaned = redact(text)
    for secret in (jwt, "abc.def", "hunter2", "s3cr3t", "12345678901234"):
        assert secret not in cleaned
    assert "1234" in cleaned  # the last four digits stay, as on a statement


def test_json_lines_carry_trace_and_interaction_ids_and_redact_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("account"))
    logger = logging.getLogger("test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    tracer = TracerProvider().get_tracer("t")
    token = interaction_id_var.set("ia-1")
    try:
        with tracer.start_as_current_span("call") as span:
            logger.warning("moved %s", "money", extra={"password": "pw", "amount": 5})
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        interaction_id_var.reset(token)
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "moved money"
    assert entry["trace_id"] == trace_id
    assert entry["interaction_id"] == "ia-1"
    assert entry["password"] == "[REDACTED]"
    assert entry["amount"] == 5


def test_each_line_has_its_own_timestamp_across_seconds() -> None:
    formatter = JsonFormatter("gateway")
    stamps = []
    for created in (1000.25, 1000.875, 1001.125, 1000.5):  # the cached second changes, and back
        record = logging.LogRecord("t", logging.INFO, "", 0, "m", (), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        stamps.append(json.loads(formatter.format(record))["ts"])
    assert stamps == [
        "1970-01-01T00:16:40.250Z",
        "1970-01-01T00:16:40.875Z",
        "1970-01-01T00:16:41.125Z",
        "1970-01-01T00:16:40.500Z",
    ]


_PIECES = st.sampled_from(
    [
        "eyJhbGciOiJFUzI1NiJ9",
        ".",
        "eyJzdWIiOiJwMSJ9",
        "Bearer ",
        "BEARER\t",
        "bearer",
        "password",
        "Secret",
        "otp",
        "=",
        ":",
        " ",
        "'",
        '"',
        "0123456789",
        "12345",
        "٠١٢٣٤٥٦٧٨٩",
        "/openbank.v1.Svc/Get",
        "ok",
        "\u017f",  # long s: case-folds to "s"
        "\u212a",  # Kelvin sign: case-folds to "k"
    ]
)


@settings(max_examples=400)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=12).map("".join))
@example("client_secret: s3cr3t")
@example("otp=123456")
@example("auth bEaReR abc")
@example("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwMSJ9.sig")
@example("acct ٠١٢٣٤٥٦٧٨٩٠")
def test_the_shortcut_never_changes_what_redaction_gives(text: str) -> None:
    assert redact(text) == _substitute_secrets(text)
