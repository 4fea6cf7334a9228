"""docs/error-reasons.md is generated from the contract and must not go stale.

The catalogue is produced by scripts/gen_error_catalogue.py from the ErrorReason comments in
protos/openbank/common/v1/error_reason.proto; these tests run it in --check mode and check
that what it reads from the comments is complete.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from openbank.common.v1 import error_reason_pb2

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_error_catalogue.py"


def _generator() -> ModuleType:
    """The script imported as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("gen_error_catalogue", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_the_committed_catalogue_matches_the_contract() -> None:
    finished = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, (
        finished.stderr or "docs/error-reasons.md is stale: run scripts/gen_error_catalogue.py"
    )


def test_every_reason_has_a_row_with_a_grpc_code_a_meaning_and_advice() -> None:
    generator = _generator()
    reasons = generator.read_reasons(generator.compile_descriptor_set())
    expected = {name.removeprefix("ERROR_REASON_") for name in error_reason_pb2.ErrorReason.keys()} - {"UNSPECIFIED"}
    assert {reason.wire for reason in reasons} == expected
    for reason in reasons:
        assert reason.codes and set(reason.codes) <= set(generator.GRPC_CODES), reason
        assert reason.meaning and reason.action, reason
    catalogue = (ROOT / "docs" / "error-reasons.md").read_text()
    assert all(f"| `{wire}` (" in catalogue for wire in expected)


def test_check_mode_fails_on_a_stale_catalogue(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    generator = _generator()
    stale = tmp_path / "error-reasons.md"
    stale.write_text("# Error reasons\n\nold text\n")
    monkeypatch.setattr(generator, "OUTPUT", stale)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0
