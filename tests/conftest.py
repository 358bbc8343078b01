from __future__ import annotations

from collections.abc import Iterator

import pytest

import rewarm


@pytest.fixture(scope="session")
def sidecar() -> Iterator[rewarm.Sidecar]:
    with rewarm.Sidecar() as sc:
        yield sc


@pytest.fixture(params=["inprocess", "socket"])
def client(request: pytest.FixtureRequest, sidecar: rewarm.Sidecar) -> Iterator[rewarm.Client]:
    if request.param == "socket":
        c = rewarm.connect("socket", socket_path=sidecar.path)
    else:
        c = rewarm.connect("inprocess")
    yield c
    c.close()
