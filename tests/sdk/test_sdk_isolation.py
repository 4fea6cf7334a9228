"""The SDK stands alone: with only sdk/, the generated contract and third-party packages on
the path (no editable install of the mesh), it imports, and pulls in none of the mesh."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_openbank_sdk_imports_with_a_clean_path_and_loads_no_mesh_module() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        stdlib = [p for p in sys.path if "python3" in p and "site-packages" not in p]
        sys.path[:] = [{str(ROOT / "sdk")!r}, {str(ROOT / "gen")!r}, {sysconfig.get_paths()["purelib"]!r},
                       {sysconfig.get_paths()["platlib"]!r}, *stdlib]
        import openbank_sdk, openbank_sdk.sandbox
        assert openbank_sdk.OpenBankClient
        mesh_packages = {{"meshlib", "services", "gateway", "meshcli", "tests"}}
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in mesh_packages)
        assert not leaked, leaked
        try:
            import meshlib  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("meshlib is importable: the path is not clean")
        print("isolated ok")
        """
    )
    # -S: no site hooks (the mesh's editable-install .pth stays out); -I: no env, no cwd.
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", script], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert "isolated ok" in result.stdout
