# syntax=docker/dockerfile:1.7
# OpenBank Mesh: one image for all five processes, chosen by command:
#   docker run IMAGE gateway | identity | account | payment | settlement
# The entrypoint is the `openbank-mesh serve` console script (see meshcli/main.py).
#
# Pin the base image by exact tag here and, in your registry mirror, by digest
# (docker build --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# build: generate the contract code and install the project into a self-contained venv.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# Every dependency ships manylinux wheels, so no compiler is installed, even here.
RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone: editing code does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt

COPY protos/ protos/
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY gen/openbank/__init__.py gen/openbank/__init__.py
COPY libs/ libs/
COPY services/ services/
COPY gateway/ gateway/
COPY meshcli/ meshcli/
COPY bankweb/ bankweb/
COPY schemesim/ schemesim/

# Generated code is not committed: produce it from the protos, then install (not editable).
RUN python scripts/gen_protos.py \
    && pip install --no-deps . \
    && python -c "import meshcli.main, gateway.server, bankweb.app, schemesim.bootstrap, openbank.payment.v1.payment_pb2" \
    && python -c "import pathlib, services; missing = [p.name for p in pathlib.Path(services.__file__).parent.iterdir() if p.is_dir() and (p / 'bootstrap.py').exists() and not list((p / 'migrations' / 'versions').glob('*.py'))]; assert not missing, f'migrations not packaged for {missing}: add services = [\"*/migrations/versions/*.py\"] to [tool.setuptools.package-data]'"

# ---------------------------------------------------------------------------------------
# runtime: the interpreter, the venv, a non-root user; nothing else.
FROM ${PYTHON_IMAGE} AS runtime

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

RUN groupadd --system --gid 10001 openbank \
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
