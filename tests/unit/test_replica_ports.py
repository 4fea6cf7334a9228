"""`up --replicas N`: where the other replicas listen and how every process finds them."""

from __future__ import annotations

import pytest

from meshcli.replicas import ports_of_replicas, replica_targets
from meshcli.targets import ports_from_base


def test_the_other_replicas_take_the_next_free_ports_after_the_first_ones() -> None:
    ports = ports_from_base(50050)  # gateway 50050, services 50051-50054, web pages elsewhere
    replicas = ports_of_replicas(ports, 3)
    assert replicas["gateway"][0] == 50050 and replicas["account"][0] == 50052
    others = [port for name in replicas for port in replicas[name][1:]]
    assert len(others) == len(set(others)) == 10
    assert not set(others) & set(ports.values())
    assert min(others) == 50055


def test_every_service_is_found_by_all_its_replicas_and_the_gateway_by_none() -> None:
    targets = replica_targets({"account": [50052, 50055], "gateway": [50050, 50059]})
    assert targets == {"OBM_ACCOUNT_TARGET": "127.0.0.1:50052,127.0.0.1:50055"}


def test_too_many_replicas_near_the_top_of_the_port_range_are_refused() -> None:
    with pytest.raises(SystemExit):
        top = {"gateway": 65530, "identity": 65531, "account": 65532, "payment": 65533, "settlement": 65534}
        ports_of_replicas(top, 2)
