"""Shared pytest fixtures: private Mosquitto brokers and throwaway WeeWX stations.

Imports: the repository root and ``bin`` are put on sys.path, so tests import the helpers as
``tests.support.broker`` / ``tests.support.station`` and the package as ``user.mqttreplicate``.

Time zone: WeeWX daily summaries use local-time days, so the test process runs with TZ=UTC and
so does every weewxd / CLI subprocess started by tests.support.station.
"""

import os
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
for _p in (str(REPO_ROOT / 'bin'), str(REPO_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

os.environ['TZ'] = 'UTC'
time.tzset()

from tests.support.broker import Broker  # noqa: E402
from tests.support.station import StationFactory  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Brokers
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def make_broker(tmp_path):
    """Factory: make_broker(**Broker kwargs) -> a started Broker; all stopped at teardown."""
    brokers = []

    def factory(**kwargs):
        broker = Broker(tmp_path / ('broker%d' % len(brokers)), **kwargs)
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        try:
            broker.stop()
        except Exception:
            broker.kill()


@pytest.fixture
def broker(make_broker):
    """A plain broker (anonymous allowed) on a free loopback port."""
    return make_broker()


@pytest.fixture
def password_broker(make_broker):
    """A broker with users primary/primary-pw and secondary/secondary-pw, anonymous refused."""
    return make_broker(password=True)


@pytest.fixture
def tls_broker(make_broker):
    """A broker with a plain listener (.port) and a TLS listener (.tls_port, CA .ca_certs)."""
    return make_broker(tls=True)


@pytest.fixture
def persistent_broker(make_broker):
    """A broker with persistence (retained messages and sessions survive restart())."""
    return make_broker(persistence=True)


# ------------------------------------------------------------------------------------------------
# Stations
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def stations(tmp_path):
    """Factory: stations(name, **make_station kwargs) -> Station under tmp_path/name.

    Every weewxd or CLI process started through these stations is killed at teardown.
    """
    factory = StationFactory(tmp_path)
    yield factory
    factory.cleanup()
