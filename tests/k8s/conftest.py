"""The rendered overlays, once per test module."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import K8S, OVERLAYS, Doc, render


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    """(name, rendered objects) of each overlay, rendered once per module."""
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    """The production overlay's objects."""
    return render(K8S / "overlays" / "prod")
