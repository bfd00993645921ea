"""A primary and a secondary WeeWX station replicating through a private broker.

    rep = Replication(broker, stations)                 # two stations, configured
    rep.seed(days=14)                                   # history on the primary
    pri = rep.start_primary()                           # simulator + responder
    sec = rep.start_secondary()                         # MQTTReplicate driver
    rep.wait_caught_up(sec)                             # 'caught up' in the secondary's log
    rep.wait_live(n=20)                                 # live records after the catch-up
    rep.finish(pri, [sec], fault=fault)                 # hold, drain, mutual knowledge,
                                                        # stop, measure, compare, logs
    rep.requester_status()['weewx/wx_binding']          # the secondary's status, as finish
                                                        # read it ('summaries': 'copied')

The primary runs weewx's Simulator in generator mode: it starts where the seeded history ends
(``resume = True``), ``history_end`` before now, and produces ~80 archive records a second,
i.e. it runs through simulated days in seconds.  The gate service (station_services.py)
keeps it from ever passing ``now - 1 h`` (the requester rejects records more than a day in
the future) and lets a test hold it between two records, so that a SIGTERM lands where it
lands on a real primary: between archive periods.

Daily summaries: both stations run WeeWX's stock ``[StdArchive] loop_hilo = True``, so the
primary folds the highs and lows of its LOOP packets -- which never leave it -- into its
daily summaries (min/max/mintime/maxtime).  The secondary's summaries are the primary's,
copied verbatim (with the catch-up pages and with each live record), so compare_databases
demands equality row by row, every ``archive_day_*`` table included.

Log lines of the extension relied on here (user.mqttreplicate at DEBUG in test stations):

* secondary ``driver: catching up <instance>/<binding> since <ts>`` (INFO) -- inside
  genStartupRecords, before the first request;
* secondary ``driver: <instance>/<binding> caught up at <ts> (<n> records)`` (INFO) -- the
  start-up catch-up is complete; the engine starts its loop right after;
* secondary ``driver: broker not reachable after <n> s; starting anyway`` (WARNING);
* primary ``responder: connected to`` / secondary ``requester: connected to`` (INFO, transport);
* primary ``responder: stopped (acks .., live N, ..)`` (INFO) at shutdown;
* primary ``cannot reach broker`` (WARNING) while the broker is absent.
"""

import re
import shutil
import time
from pathlib import Path

from tests.support.measure import end_to_end, settling
from tests.support.mutual import expectations, wait_mutual_knowledge
from tests.support.station import (ENGINE_RESTART, STARTED, UNRECOVERABLE, compare_databases,
                                   generate_records, seed_history)
from tests.support.waiting import wait_until  # noqa: F401 (used here and re-exported)
from tests.support.station import TEST_HEARTBEAT

HERE = Path(__file__).resolve().parent
SERVICES_SRC = HERE / 'station_services.py'

DAY = 86400
INTERVAL = 300
RESPONDER = 'user.mqttreplicate.MQTTResponder'
GATE = 'user.e2e_services.Gate'
AIR_QUALITY = 'user.e2e_services.AirQuality'

INSTANCE = 'weewx'
MAIN_KEY = INSTANCE + '/wx_binding'
AQ_KEY = INSTANCE + '/aq_binding'

CATCHING_UP = r'driver: catching up %s since (\d+)'
CAUGHT_UP = r'driver: %s caught up at (\d+) \((\d+) records\)'
HOLDING = r'e2e gate: holding after record (\d+)'
STARTING_ANYWAY = r'driver: broker not reachable after \d+ s; starting anyway'
PRIMARY_CONNECTED = r'responder: connected to'
SECONDARY_CONNECTED = r'requester: connected to'
SAFETY_MARGIN = 3600        # the primary never runs past now - this


class KnownBug(AssertionError):
    """The symptom of a known bug: tests mark themselves
    xfail(strict=True, raises=KnownBug), so any other failure still fails."""


def aligned_now():
    now = int(time.time())
    return now - now % INTERVAL


INJECTIONS = ('SignalAfterCommit', 'SigtermInResponder', 'SigtermInRequesterAck')


def install_services(station):
    """Copy station_services.py into the station as user.e2e_services."""
    shutil.copy(SERVICES_SRC, station.root / 'bin' / 'user' / 'e2e_services.py')


def aq_records(start_ts, count, interval_minutes=5, units=1):
    from tests.e2e.station_services import aq_record
    step = interval_minutes * 60
    return [aq_record(start_ts + i * step, units, interval_minutes) for i in range(count)]


def _aq_database(config):
    config['DataBindings']['aq_binding'] = {
        'database': 'aq_sqlite', 'table_name': 'archive',
        'manager': 'weewx.manager.DaySummaryManager',
        'schema': 'weewx.schemas.wview_extended.schema'}
    config['Databases']['aq_sqlite'] = {'database_name': 'aq.sdb', 'database_type': 'SQLite'}


class Replication:
    """Two throwaway stations wired to one broker.

    broker: a tests.support.broker.Broker (possibly not started yet, but with its port set).
    stations: the `stations` fixture (StationFactory).
    aq: also replicate a second binding, aq_binding (type = secondary).
    """

    def __init__(self, broker, stations, *, aq=False, history_end=10 * DAY,
                 primary_options=None, requester_options=None, secondary_name='secondary'):
        self.broker = broker
        self.stations = stations
        self.aq = aq
        self.now = aligned_now()
        self.history_end = self.now - history_end     # the simulator starts here
        self.limit = self.now - SAFETY_MARGIN
        self.primary = stations('primary')
        self.secondary = stations(secondary_name)
        self.gate_file = self.primary.root / 'gate'
        self.bindings = ['wx_binding'] + (['aq_binding'] if aq else [])
        self._configure_primary(primary_options or {})
        self._configure_secondary(self.secondary, requester_options or {})
        self.release()

    # --- configuration -------------------------------------------------------------------------

    def connection(self):
        # max_delay 2: a broker that comes back is found again within 2 s
        # status_heartbeat 1: tests.support.station.TEST_HEARTBEAT
        return {'host': self.broker.host, 'port': str(self.broker.port), 'max_delay': '2',
                'status_heartbeat': TEST_HEARTBEAT}

    def _configure_primary(self, extra):
        st = self.primary
        install_services(st)
        st.set_simulator(mode='generator', start=self.history_end, loop_interval=30)
        st.add_service('restful_services', RESPONDER)
        st.add_service('restful_services', GATE)
        if self.aq:
            st.add_service('archive_services', AIR_QUALITY)
        bindings = {'wx_binding': {'type': 'main'}}
        if self.aq:
            bindings['aq_binding'] = {'type': 'secondary'}

        def fn(config):
            config['E2E'] = {'gate_file': str(self.gate_file), 'aq_binding': 'aq_binding'}
            responder = {'enable': 'true', INSTANCE: bindings}
            responder.update(extra)
            config['Replicator'] = dict(self.connection(), Responder=responder)
            if self.aq:
                _aq_database(config)
        st.edit(fn)

    def _configure_secondary(self, st, extra):
        bindings = {'wx_binding': {'type': 'main'}}
        if self.aq:
            bindings['aq_binding'] = {'type': 'secondary', 'secondary_data_binding': 'aq_binding'}

        def fn(config):
            config['Station']['station_type'] = 'Replicator'
            config['Engine']['Services']['process_services'] = ['weewx.engine.StdConvert']
            requester = {INSTANCE: bindings}
            requester.update(extra)
            config['Replicator'] = dict(self.connection(), driver='user.mqttreplicate',
                                           Requester=requester)
            if self.aq:
                _aq_database(config)
        st.edit(fn)

    def inject(self, service=None, station=None, **options):
        """Set [E2E] options on a station (default: the primary; None removes an option) and
        add a fault-injection service of station_services.py to its archive_services
        (service=None: remove them). Takes effect at the station's next start."""
        st = station or self.primary
        install_services(st)
        group = 'archive_services'
        for name in INJECTIONS:
            st.remove_service(group, 'user.e2e_services.' + name)
        if service:
            assert service in INJECTIONS, service
            st.add_service(group, 'user.e2e_services.' + service)

        def fn(config):
            section = config.setdefault('E2E', {})
            for key, value in options.items():
                if value is None:
                    section.pop(key, None)
                else:
                    section[key] = str(value)
        st.edit(fn)

    def add_secondary(self, name, requester_options=None):
        """Another secondary on the same broker (its own client id: its own directory)."""
        st = self.stations(name)
        self._configure_secondary(st, requester_options or {})
        return st

    # --- history -------------------------------------------------------------------------------

    def seed(self, days=None, count=None):
        """Seed the primary's history (every binding) so that it ends at history_end."""
        count = count if count is not None else int(days * DAY // INTERVAL)
        first = self.history_end - (count - 1) * INTERVAL
        records = list(generate_records(first, count))
        seed_history(self.primary, first, count, records=records)
        if self.aq:
            seed_history(self.primary, first, count, binding='aq_binding',
                         records=aq_records(first, count))
        self.seeded = count
        return first, self.history_end

    # --- the gate ------------------------------------------------------------------------------

    def _write_gate(self, value):
        tmp = self.gate_file.with_suffix('.tmp')
        tmp.write_text('%d\n' % value)
        tmp.replace(self.gate_file)

    def release(self):
        """Let the primary run (up to now - SAFETY_MARGIN)."""
        self._write_gate(self.limit)

    def hold_at(self, at):
        """Make the primary hold at its first record with dateTime >= at (no waiting)."""
        self._write_gate(at)

    def hold(self, proc, at=0):
        """Hold the primary's engine after its next record (or the first >= at) was
        published; return that record's dateTime."""
        before = self._holds(proc)
        self._write_gate(at)
        held = proc.wait_for_log(HOLDING, timeout=30, count=before + 1)
        return int(held.group(1))

    @staticmethod
    def _holds(proc):
        return len(re.findall(HOLDING, proc.log_text()))

    # --- processes -----------------------------------------------------------------------------

    def start_primary(self, wait=True):
        proc = self.primary.start_weewxd()
        if wait:
            proc.wait_for_log(STARTED, timeout=30)
        return proc

    def start_secondary(self, station=None):
        return (station or self.secondary).start_weewxd()

    def wait_caught_up(self, proc, key=MAIN_KEY, timeout=60):
        """Wait for the secondary's start-up catch-up; return (position, records stored)."""
        m = proc.wait_for_log(CAUGHT_UP % re.escape(key), timeout=timeout)
        return int(m.group(1)), int(m.group(2))

    def wait_primary_grows(self, n, timeout=30):
        start = self.primary.count_records()
        wait_until(lambda: self.primary.count_records() >= start + n, timeout,
                   '%d new records on the primary' % n)

    def wait_live(self, since, n=10, station=None, timeout=30):
        """Wait until the secondary has n records newer than `since`."""
        st = station or self.secondary
        wait_until(lambda: (st.last_timestamp() or 0) >= since + n * INTERVAL, timeout,
                   '%d live records on %s after %s' % (n, st.name, since))

    def in_sync(self, station=None):
        st = station or self.secondary
        for binding in self.bindings:
            if st.last_timestamp(binding) != self.primary.last_timestamp(binding) \
                    or st.count_records(binding) != self.primary.count_records(binding):
                return False
        return True

    def describe_sync(self, station=None):
        st = station or self.secondary
        return '\n'.join('%s: primary %s records, newest %s; %s %s records, newest %s'
                         % (b, self.primary.count_records(b), self.primary.last_timestamp(b),
                            st.name, st.count_records(b), st.last_timestamp(b))
                         for b in self.bindings)

    def wait_in_sync(self, station=None, timeout=60):
        wait_until(lambda: self.in_sync(station), timeout, 'the secondary to drain',
                   describe=lambda: self.describe_sync(station))

    def finish(self, primary_proc, secondary_procs, stations=None, fault=None, compare=None):
        """Hold the primary, let the secondaries drain, wait for mutual knowledge (both
        sides' statuses show what the other has; kept for requester_status()), stop
        everything, then compare and check the logs. fault: a tests.support.measure.Fault,
        whose row of the fault table gets this run's figures (measured once everything
        stopped, or when the settling fails), before anything is asserted on them.
        compare(station): asserts a secondary holds what it should (default assert_equal:
        the primary's databases, row by row). Returns the primary's newest record."""
        stations = stations or [self.secondary]
        with settling(lambda: self.figures(stations), fault) as figures:
            held = self.hold(primary_proc)
            for st in stations:
                self.wait_in_sync(st)
            self.statuses = wait_mutual_knowledge(self.broker, self.primary, stations)
            assert primary_proc.stop() == -15, primary_proc.describe()
            for proc in secondary_procs:
                proc.stop()
        figures.assert_clean()
        assert self.primary.last_timestamp() == held
        for st in stations:
            (compare or self.assert_equal)(st)
            assert_clean_secondary_log(st)
        assert_clean_primary_log(self.primary)
        return held

    def settle(self, station=None):
        """With the primary held: wait until the secondary has everything and both sides'
        statuses show it (what the secondary stores after a record, its day's daily
        summaries, is stored before it acknowledges the record)."""
        st = station or self.secondary
        self.wait_in_sync(st)
        self.statuses = wait_mutual_knowledge(self.broker, self.primary, [st])

    def requester_status(self, station=None):
        """{binding key: that binding's entry} of the secondary's retained status, as
        finish() or settle() last read it."""
        st = station or self.secondary
        return {exp.key: self.statuses[exp.requester_topic]['bindings'][exp.key]
                for exp in expectations(self.primary, [st])}

    def reference(self, name='reference', units='US', bindings=None):
        """A station (never started) holding, in each of bindings (default: every one), the
        primary's archive records converted to `units` ('US', 'METRIC', 'METRICWX') and
        daily summaries built from them alone (rebuild_from_archive). Make it once the
        primary stopped."""
        import weewx.units
        st = self.stations(name, units=units)
        if self.aq:
            st.edit(_aq_database)
        for binding in bindings or self.bindings:
            rebuild_from_archive(self.primary, st, binding,
                                 weewx.units.unit_constants[units.upper()])
        return st

    def figures(self, stations=None):
        """What the run lost, doubled, restarted and locked (tests.support.measure)."""
        return end_to_end(self.primary, stations or [self.secondary], self.bindings)

    def assert_equal(self, station=None):
        st = station or self.secondary
        for binding in self.bindings:
            diffs = compare_databases(self.primary, binding, st, binding)
            assert diffs == [], '%s differs:\n%s' % (binding, '\n'.join(diffs))


# --- daily summaries -----------------------------------------------------------------------

def day_stop(ts):
    """The first midnight after the archive day of ts (local time: TZ=UTC in tests)."""
    import weeutil.weeutil
    return int(weeutil.weeutil.archiveDaySpan(ts).stop)


def rebuild_from_archive(source, target, binding='wx_binding', units=None):
    """Load source's archive records of binding into target's (converted to `units`, a
    unit system constant, if given) and build target's daily summaries from them alone,
    as WeeWX's bulk load does (Manager.addRecord, then backfill_day_summary, like
    `weectl database transfer` and `rebuild-daily`). Returns how many records."""
    import weewx.units
    with source.open_manager(binding) as manager:
        records = list(manager.genBatchRecords())
    if units is not None:
        records = [weewx.units.to_std_system(r, units) for r in records]
    seed_history(target, records[0]['dateTime'], len(records), binding=binding,
                 records=records, loop_hilo=False)
    return len(records)


# --- logs ------------------------------------------------------------------------------------

LEVEL = re.compile(r'^\S+ \S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ')


def log_lines(station, level):
    return [line for line in station.log_text().splitlines()
            if (m := LEVEL.match(line)) and m.group(1) == level]


def assert_clean_secondary_log(station):
    """No ERROR or CRITICAL line, no duplicate insert, no engine restart, no traceback."""
    text = station.log_text()
    bad = log_lines(station, 'ERROR') + log_lines(station, 'CRITICAL')
    bad += [line for line in text.splitlines()
            if 'Unable to add record' in line or 'Traceback' in line
            or re.search(ENGINE_RESTART, line) or re.search(UNRECOVERABLE, line)
            or 'Ignore historical record' in line]
    assert not bad, 'secondary %s log:\n%s' % (station.name, '\n'.join(bad[:30]))


def assert_clean_primary_log(station):
    """No 'database is locked', no engine restart, nothing fatal, no ERROR."""
    text = station.log_text()
    bad = log_lines(station, 'ERROR') + log_lines(station, 'CRITICAL')
    bad += [line for line in text.splitlines()
            if 'database is locked' in line or 'Traceback' in line
            or re.search(ENGINE_RESTART, line) or re.search(UNRECOVERABLE, line)]
    assert not bad, 'primary log:\n%s' % '\n'.join(bad[:30])
