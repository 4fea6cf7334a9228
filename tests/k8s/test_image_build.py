"""The image built for real, without pulling any base image (scripts/build-image: a Debian
bookworm base from Debian's packages by mmdebstrap, imported into buildah, the Dockerfile
built against it from the hash-locked requirements), and the build script checked statically.

The build takes minutes and needs root, mmdebstrap and buildah (`apt-get install mmdebstrap
buildah`): it is marked slow (`make test` leaves it out; `pytest -m slow tests/k8s` runs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-image"
TAG = "localhost/openbank-mesh:pytest"


def test_the_dockerfile_takes_its_base_as_a_build_argument() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(base == "${BASE_IMAGE}" for base in froms)
    # Both bases: python3 only (Debian's has no `python`), pip's CA from a build secret only.
    assert not re.search(r"(^|[\s&;])python -m", text)
    assert "--mount=type=secret,id=pip-ca" in text
    assert not re.search(r"^(COPY|ADD) .*\.(crt|pem)", text, re.M), "a CA bundle must not land in a layer"


def test_the_build_script_makes_its_base_from_debian_packages_and_never_pulls() -> None:
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert re.search(r"mmdebstrap .*--variant=essential", text) and "python3.11" in text
    assert "buildah from scratch" in text
    assert '--build-arg "BASE_IMAGE=$BASE_TAG"' in text and "--pull=never" in text


def _buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
    return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if os.geteuid() != 0 or not (shutil.which("buildah") and shutil.which("mmdebstrap")):
        pytest.skip("needs root, buildah and mmdebstrap (apt-get install mmdebstrap buildah)")
    done = subprocess.run([str(SCRIPT), "--tag", TAG], capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    yield TAG


@pytest.fixture
def container(image: str) -> Iterator[str]:
    created = _buildah("from", "--pull-never", image)
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip().splitlines()[-1]
    yield name
    _buildah("rm", name)


def _run(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return _buildah("run", container, "--", *command, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's build: minutes (8 under load here)
def test_the_built_image_migrates_and_exits_and_carries_no_build_tools(container: str) -> None:
    helped = _run(container, "openbank-mesh", "--help")
    assert helped.returncode == 0 and "migrate" in helped.stdout, helped.stderr
    # Migrate-and-exit against a throwaway SQLite database in the data volume (as uid 10001).
    migrated = _run(container, "openbank-mesh", "migrate", "identity")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "migrated" in migrated.stdout + migrated.stderr
    probe = (
        "import importlib.util as u, os, pathlib, sys;"
        "print(os.getuid(), sys.version_info[:2],"
        " [m for m in ('pip', 'setuptools', 'wheel', 'grpc_tools') if u.find_spec(m)],"
        " [p for p in ('/usr/share/python-wheels', '/usr/lib/python3.11/ensurepip') if pathlib.Path(p).exists()])"
    )
    checked = _run(container, "python", "-c", probe)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "10001 (3, 11) [] []"
    for tool in ("pip", "pip3", "gcc", "apt-get"):
        assert _run(container, "sh", "-c", f"command -v {tool}").returncode != 0, f"{tool} in the image"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_built_image_runs_the_serve_entrypoint_as_a_non_root_user(image: str) -> None:
    config = json.loads(_buildah("inspect", "--type", "image", image).stdout)
    oci = config["OCIv1"]["config"]
    assert oci["User"] == "10001:10001"
    assert oci["Entrypoint"] == ["openbank-mesh", "serve"] and oci["Cmd"] == ["gateway"]
