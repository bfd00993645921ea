"""Fixtures of the end-to-end tests: a primary and a secondary weewxd through a private broker."""

import pytest

from tests.support.broker import free_port
from tests.e2e.replication import Replication


@pytest.fixture
def replication(make_broker, stations):
    """Factory: replication(**Replication kwargs) -> Replication on a fresh broker.

    broker_started=False gives a broker with its port chosen but not running yet
    (start it with rep.broker.start()).
    """
    def factory(broker_started=True, **kwargs):
        if broker_started:
            broker = make_broker()
        else:
            broker = make_broker(start=False)
            broker.port = free_port()
        return Replication(broker, stations, **kwargs)
    return factory
