"""Topologies of docs/topologies.md under real weewxd (issue 11, items 3 and 4), each with the
stanzas read from the page (tests/support/topologies.py: only the broker's host and port,
and a short reconnection delay, are replaced), each ending with a row-by-row comparison of
the archive and the daily summaries.

* A chain: primary -> secondary -> tertiary on one broker. The secondary runs the requester
  driver and the responder service at once, serving its copy under the instance
  ``weewx_relay``. The records it stores in bulk (its catch-up at start and after a restart,
  which never go through its engine and so are never published one by one) reach the
  tertiary too.
* Several primaries into one secondary: ``north`` and ``south``, each into its own binding
  and database on one secondary, their statuses kept apart.
"""

import re

import pytest

from tests.e2e.replication import (DAY, GATE, HOLDING, INTERVAL, PRIMARY_CONNECTED,
                                   RESPONDER, aligned_now, assert_clean_primary_log,
                                   assert_clean_secondary_log, install_services, log_lines,
                                   wait_until)
from tests.support.mutual import wait_mutual_knowledge
from tests.support.station import (ENGINE_RESTART, STARTED, UNRECOVERABLE, compare_databases,
                                   seed_history)
from tests.support.topologies import documented_config, documented_stanza
from tests.support.station import TEST_HEARTBEAT

from user.mqttreplicate import config as cfg

pytestmark = pytest.mark.e2e

RELAY_KEY = 'weewx_relay/wx_binding'
HOLE = r'requester: %s: hole before live record (\d+) \(have (\d+)'
CAUGHT_UP = r'driver: %s caught up at (\d+) \((\d+) records\)'


def use_documented(station, name, broker, **replace):
    """[Replicator] of station = the page's block `name`, at the test's broker."""
    stanza = documented_stanza(name, host=broker.host, port=broker.port, max_delay=2,
                               status_heartbeat=TEST_HEARTBEAT,
                               **replace)
    station.edit(lambda config: config.__setitem__('Replicator', stanza))


# tests/integration/test_topologies.py::test_fresh_relay_station_before_its_database_exists
# (xfail): at its first start, a relay's responder reads its database before the engine has
# created it, and logs it at ERROR.
FRESH_RELAY = ()    # none since the responder waits for the engine to create the database


def assert_clean_relay_log(station, first_run_ends):
    """The checks of assert_clean_secondary_log and assert_clean_primary_log, except the
    known error lines of the fresh relay (FRESH_RELAY), before first_run_ends (where the
    first run's log text ends)."""
    text = station.log_text()
    first, rest = text[:first_run_ends], text[first_run_ends:]
    known = [line for line in first.splitlines()
             if any(re.search(p, line) for p in FRESH_RELAY)]
    bad = [line for line in log_lines(station, 'ERROR') + log_lines(station, 'CRITICAL')
           if line not in known]
    bad += [line for line in text.splitlines()
            if 'Unable to add record' in line or 'Traceback' in line
            or 'database is locked' in line or 'Ignore historical record' in line
            or re.search(ENGINE_RESTART, line) or re.search(UNRECOVERABLE, line)]
    assert not bad, '%s log:\n%s' % (station.name, '\n'.join(bad[:30]))
    assert not [line for line in rest.splitlines()
                if any(re.search(p, line) for p in FRESH_RELAY)]


def assert_equal(primary, station, binding='wx_binding', primary_binding='wx_binding'):
    diffs = compare_databases(primary, primary_binding, station, binding)
    assert diffs == [], '%s differs:\n%s' % (station.name, '\n'.join(diffs))


def test_chain_through_a_restart_of_the_middle_station(replication):
    rep = replication()
    rep.seed(days=2)                                  # 576 records, then the simulator
    middle, primary = rep.secondary, rep.primary
    use_documented(middle, 'chain-secondary', rep.broker)
    middle.add_service('restful_services', RESPONDER)
    tertiary = rep.add_secondary('tertiary')
    use_documented(tertiary, 'chain-tertiary', rep.broker)
    for station in (middle, tertiary):
        (station.root / 'archive').mkdir()            # see test_bindings.py

    pri = rep.start_primary()
    rep.wait_primary_grows(20)
    # The tertiary starts once the middle's responder is up (a request sent before a
    # responder's first connection is lost: see test_topologies.py's xfail
    # test_catch_up_begins_when_a_responder_comes_online_for_the_first_time).
    mid = rep.start_secondary(middle)
    mid.wait_for_log(PRIMARY_CONNECTED, timeout=30)
    ter = rep.start_secondary(tertiary)
    first_position, stored = rep.wait_caught_up(mid)
    assert stored >= rep.seeded
    rep.wait_live(since=first_position, n=10, station=tertiary)

    # The middle station stops while the primary goes on, and comes back: its catch-up
    # stores what it missed in bulk.
    assert mid.stop() == -15, mid.describe()
    stopped_at = middle.last_timestamp()
    first_run_ends = len(middle.log_text())
    rep.wait_primary_grows(100)
    mid = rep.start_secondary(middle)
    position, stored = rep.wait_caught_up(mid)
    assert position >= stopped_at + 100 * INTERVAL and stored >= 100
    rep.wait_live(since=position, n=10, station=tertiary)

    # Hold the primary; everything drains down the chain; each pair knows what the other has.
    held = rep.hold(pri)
    rep.wait_in_sync(middle)
    rep.wait_in_sync(tertiary)
    wait_mutual_knowledge(rep.broker, primary, [middle])
    wait_mutual_knowledge(rep.broker, middle, [tertiary])
    assert pri.stop() == -15, pri.describe()
    assert mid.stop() == -15, mid.describe()
    assert ter.stop() == -15, ter.describe()

    assert primary.last_timestamp() == held
    assert_equal(primary, middle)
    assert_equal(primary, tertiary)
    # How the tertiary got the records stored in bulk: the middle station's first live
    # record after each catch-up names the previous record (`prev`), the tertiary sees the
    # hole and fetches it.
    holes = [(int(m.group(1)), int(m.group(2)))
             for m in re.finditer(HOLE % re.escape(RELAY_KEY), tertiary.log_text())]
    assert any(have <= stopped_at < live for live, have in holes), holes
    assert_clean_relay_log(middle, first_run_ends)
    assert_clean_secondary_log(tertiary)
    assert_clean_primary_log(primary)


# ------------------------------------------------------------------------------------------------
# several primaries into one secondary
# ------------------------------------------------------------------------------------------------

class GatedPrimary:
    """A primary weewxd (simulator in generator mode from history_end, the responder, the
    gate of station_services.py) with the page's stanza for `instance`."""

    def __init__(self, stations, broker, instance, history_end, days):
        self.instance = instance
        self.station = st = stations(instance)
        self.gate_file = st.root / 'gate'
        self.history_end = history_end
        install_services(st)
        st.set_simulator(mode='generator', start=history_end, loop_interval=30)
        st.add_service('restful_services', RESPONDER)
        st.add_service('restful_services', GATE)
        stanza = documented_stanza('several-primaries-' + instance, host=broker.host,
                                   port=broker.port, max_delay=2,
                               status_heartbeat=TEST_HEARTBEAT)

        def fn(config):
            config['E2E'] = {'gate_file': str(self.gate_file)}
            config['Replicator'] = stanza
        st.edit(fn)
        self.seeded = int(days * DAY // INTERVAL)
        seed_history(st, history_end - (self.seeded - 1) * INTERVAL, self.seeded)

    def hold_at(self, ts):
        """The engine holds at its first record >= ts (after publishing it)."""
        tmp = self.gate_file.with_suffix('.tmp')
        tmp.write_text('%d\n' % ts)
        tmp.replace(self.gate_file)

    def start(self):
        self.proc = self.station.start_weewxd()
        self.proc.wait_for_log(STARTED, timeout=30)
        return self.proc

    def wait_held(self, at):
        """Wait until the engine holds at record `at`."""
        self.proc.wait_for_log(HOLDING.replace(r'(\d+)', str(at)), timeout=60)


def test_two_primaries_into_one_secondary(stations, make_broker):
    broker = make_broker()
    history_end = aligned_now() - 10 * DAY
    north = GatedPrimary(stations, broker, 'north', history_end, days=2)
    south = GatedPrimary(stations, broker, 'south', history_end, days=3)   # a day more
    secondary = stations('secondary')
    documented = documented_config('several-primaries-secondary')
    stanza = documented_stanza('several-primaries-secondary', host=broker.host,
                               port=broker.port, max_delay=2,
                               status_heartbeat=TEST_HEARTBEAT)

    def configure(config):
        config['Station']['station_type'] = 'Replicator'
        config['Engine']['Services']['process_services'] = ['weewx.engine.StdConvert']
        config['Replicator'] = stanza
        for section in ('DataBindings', 'Databases'):
            config[section].update(documented[section])
    secondary.edit(configure)
    (secondary.root / 'archive').mkdir()                  # see test_bindings.py

    # The primaries make 20 records each and hold: the catch-up has a fixed end.
    for primary in (north, south):
        primary.hold_at(history_end + 20 * INTERVAL)
        primary.start()
    sec = secondary.start_weewxd()
    sec.wait_for_log(CAUGHT_UP % re.escape('north/wx_binding'), timeout=60)
    caught_up = history_end + 20 * INTERVAL
    wait_until(lambda: (secondary.last_timestamp('south_binding') or 0) >= caught_up, 30,
               'the south binding\'s catch-up')

    # Live records of both, until each holds 40 records later.
    last = history_end + 60 * INTERVAL
    for primary in (north, south):
        primary.hold_at(last)
    for primary in (north, south):
        primary.wait_held(last)
    for binding in ('wx_binding', 'south_binding'):
        wait_until(lambda: secondary.last_timestamp(binding) == last, 30,
                   'the secondary\'s %s to reach %s' % (binding, last))

    statuses = {}
    for primary in (north, south):
        statuses.update(wait_mutual_knowledge(broker, primary.station, [secondary]))
    clientid = cfg.parse_requester(secondary.config_dict()).connection.clientid
    for instance in ('north', 'south'):
        key = instance + '/wx_binding'
        own = statuses['replicate/status/%s' % instance]
        assert own['instance'] == instance and list(own['bindings']) == [key]
        assert list(own['nodes']) == [clientid] and list(own['nodes'][clientid]) == [key]
        mine = statuses['replicate/status/%s/%s' % (instance, clientid)]
        assert list(mine['bindings']) == [key], mine

    for primary in (north, south):
        assert primary.proc.stop() == -15, primary.proc.describe()
    assert sec.stop() == -15, sec.describe()
    assert secondary.count_records('wx_binding') == north.seeded + 60
    assert secondary.count_records('south_binding') == south.seeded + 60
    assert_equal(north.station, secondary, 'wx_binding')
    assert_equal(south.station, secondary, 'south_binding')
    assert secondary.db_path('south_binding').name == 'south.sdb'
    assert_clean_secondary_log(secondary)
    for primary in (north, south):
        assert_clean_primary_log(primary.station)
