# syntax=docker/dockerfile:1.7
# OpenBank Mesh: one image for all five processes, chosen by command:
#   docker run IMAGE gateway | identity | account | payment | settlement
# The entrypoint is the `openbank-mesh serve` console script (see meshcli/main.py).
#
# Pin the base image by exact tag here and, in your registry mirror, by digest
# (docker build --build-arg BASE_IMAGE=python:3.11.11-slim-bookworm@sha256:...).
# An air-gapped builder makes its own base from Debian packages instead (Debian bookworm's
# python3.11, made by mmdebstrap): scripts/build-image passes BASE_IMAGE=localhost/obm-base:bookworm.
# Only `python3` is used below: both bases have it (and not always `python`).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# build: generate the contract code, build the project's wheel, and assemble /opt/venv, the
# only thing the runtime stage takes. Two environments: /opt/build has pip, grpcio-tools,
# setuptools and wheel (requirements/build.lock); /opt/venv is made without pip and gets
# only requirements/runtime.lock and the wheel, installed by /opt/build's pip. Every
# dependency comes from a lock file with hashes (pip refuses anything else).
FROM ${BASE_IMAGE} AS build

# A PyPI mirror for an air-gapped builder (the hashes are checked all the same).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels, so no compiler is installed, even here.
RUN python3 -m venv /opt/build \
    && python3 -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first, from the locks alone: editing code does not reinstall them.
COPY requirements/build.lock requirements/runtime.lock requirements/
# A builder behind a TLS-inspecting proxy passes its CA bundle as the build secret pip-ca
# (scripts/build-image does); it never lands in a layer.
RUN --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --requirement requirements/build.lock \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes \
       --requirement requirements/runtime.lock

COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY gen/openbank/__init__.py gen/openbank/__init__.py
COPY libs/ libs/
COPY services/ services/
COPY gateway/ gateway/
COPY meshcli/ meshcli/
COPY bankweb/ bankweb/
COPY schemesim/ schemesim/

# Generated code is not committed: produce it from the protos, build the wheel, install it
# (not editable, no dependency resolution), and check the result imports and is lean.
RUN /opt/build/bin/python scripts/gen_protos.py \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/python -c "import meshcli.main, gateway.server, bankweb.app, schemesim.bootstrap, openbank.payment.v1.payment_pb2" \
    && /opt/venv/bin/python -c "import pathlib, services; missing = [p.name for p in pathlib.Path(services.__file__).parent.iterdir() if p.is_dir() and (p / 'bootstrap.py').exists() and not list((p / 'migrations' / 'versions').glob('*.py'))]; assert not missing, f'migrations not packaged for {missing}: add services = [\"*/migrations/versions/*.py\"] to [tool.setuptools.package-data]'" \
    && /opt/venv/bin/python -c "import importlib.util as u; extra = [m for m in ('pip', 'setuptools', 'wheel', 'grpc_tools') if u.find_spec(m)]; assert not extra, f'build tools in the runtime venv: {extra}'"

# ---------------------------------------------------------------------------------------
# runtime: the interpreter, the venv, a non-root user; nothing else (no pip, setuptools,
# grpcio-tools or compiler).
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="openbank-mesh" \
      org.opencontainers.image.description="OpenBank Mesh gateway, identity, account, payment and settlement" \
      org.opencontainers.image.licenses="Apache-2.0"

# Read-only root filesystem friendly: no bytecode writes, HOME in /tmp, SQLite (dev only)
# under the data volume; in Kubernetes /tmp and /var/lib/openbank are emptyDir volumes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    OBM_HOST=0.0.0.0 \
    OBM_LOG_FORMAT=json \
    OBM_DATA_DIR=/var/lib/openbank

# The base image's own pip, setuptools and wheel go too: nothing here installs anything
# (python.org's image has pip installed; Debian's has ensurepip and its bundled wheels).
RUN if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes --quiet pip setuptools wheel; fi \
    && rm -rf /usr/local/lib/python3.11/ensurepip /usr/lib/python3.11/ensurepip /usr/share/python-wheels \
    && groupadd --system --gid 10001 openbank \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin openbank \
    && install --directory --owner=10001 --group=10001 --mode=0750 /var/lib/openbank

COPY --from=build /opt/venv /opt/venv

WORKDIR /var/lib/openbank
USER 10001:10001

# gRPC: gateway 50050, identity 50051, account 50052, payment 50053, settlement 50054;
# Prometheus metrics on 9464 (OBM_METRICS_PORT).
EXPOSE 50050 50051 50052 50053 50054 9464

# Kubernetes probes the gRPC health service natively; no HEALTHCHECK in the image.
ENTRYPOINT ["openbank-mesh", "serve"]
CMD ["gateway"]
