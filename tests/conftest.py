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
from tests.support.reliability import OUTPUT, FaultTable  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

FAULT_TABLE = FaultTable()


# ------------------------------------------------------------------------------------------------
# The fault table of docs/reliability.md
# ------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def logging_as_it_was():
    """Put the package's loggers back as they were after each test: the command line run in
    this process (cli.main: setup_logging) quiets the transport's INFO lines, which later
    tests count (its reconnections)."""
    import logging
    names = ('', 'user.mqttreplicate', 'user.mqttreplicate.transport')
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def fault_report(request):
    """fault_report(fault, checked, *, lost, duplicates, restarts=None, locked=0): one row of
    docs/reliability.md's fault table. Call it once, with measured figures, before asserting
    on them (restarts=None where no weewxd primary runs)."""
    def report(fault, checked, **figures):
        FAULT_TABLE.record(request.node.nodeid, fault, checked, **figures)
    return report


# ------------------------------------------------------------------------------------------------
# The quick run: scripts/test -m "not slow" (README), under 3 minutes on 2 cores
# ------------------------------------------------------------------------------------------------

# integration modules of a few seconds in all, in the quick run; every other integration module
# and every end-to-end test (real weewxd) is `slow`, as is any test marked so itself
QUICK_INTEGRATION = frozenset((
    'test_live', 'test_compact_live', 'test_transport_paho', 'test_transport_threads',
    'test_bindings', 'test_units', 'test_acl', 'test_security', 'test_status',
    'test_topologies', 'test_responder_defects', 'test_mysql_prepared',
))


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        kind = path.parent.name
        if kind == 'e2e' or (kind == 'integration' and path.stem not in QUICK_INTEGRATION):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == 'call' or (report.when == 'setup' and not report.passed):
        FAULT_TABLE.outcome(item.nodeid, report.passed)


def pytest_sessionfinish(session, exitstatus):
    error = FAULT_TABLE.finish()
    if error:
        session.config._mqttreplicate_fault_table_error = error
        if session.exitstatus == 0:
            session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if FAULT_TABLE.rows:
        terminalreporter.write_line('fault table (%d faults) written to %s'
                                    % (len(FAULT_TABLE.rows), os.path.relpath(OUTPUT, REPO_ROOT)))
    error = getattr(terminalreporter.config, '_mqttreplicate_fault_table_error', None)
    if error:
        terminalreporter.write_line('ERROR: ' + error, red=True)


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
# MariaDB servers (private: a data directory, a loopback port and a socket of their own)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def mariadb(tmp_path_factory):
    """One private MariaDB server for the session; tests take fresh database names from
    mariadb.new_database(). A server that cannot start fails the test (never a skip)."""
    server = MariaDB(tmp_path_factory.mktemp('mariadb'))
    yield server
    server.stop()


@pytest.fixture
def make_mariadb(tmp_path):
    """Factory: make_mariadb(**MariaDB kwargs) -> a server of the test's own (to restart,
    or with other settings); all stopped at teardown."""
    servers = []

    def factory(**kwargs):
        server = MariaDB(tmp_path / ('mariadb%d' % len(servers)), **kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


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
