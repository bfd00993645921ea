"""In-process replication rigs for the integration tests.

The real Responder (responder.Responder) and the real requester (requester.Requester plus
requester.Writer, built exactly as cli.cmd_request builds them) run in the test process against
a private Mosquitto broker, with throwaway SQLite stations made by tests.support.station.

    primary = rig.primary(broker, count=3000, batch_size=50)     # seeded, [[Responder]] set
    secondary = rig.secondary(broker, page_size=200)             # empty, [[Requester]] set
    responder = rig.start_responder(primary)                     # connected Responder
    node = rig.start_requester(secondary)                        # RequesterNode
    node.wait_caught_up()
    assert_same(primary, secondary)
"""

import logging
import time
import uuid

from tests.support.mqtt import MqttClient
from tests.support.station import (TEST_HEARTBEAT, compare_databases, loop_accumulator,
                                   make_station, seed_history, simulated_record)

from user.mqttreplicate import config as cfg, messages
from user.mqttreplicate import database
from user.mqttreplicate.requester import Requester, Writer
from tests.support.waiting import wait_until  # noqa: F401 (used here and re-exported)
from user.mqttreplicate.responder import Responder

DAY = 86400
START = 1700000000 - 1700000000 % DAY          # 2023-11-14 00:00 UTC
STEP = 300                                     # 5-minute archive records
INSTANCE = 'weewx'
BINDING = 'wx_binding'
KEY = '%s/%s' % (INSTANCE, BINDING)            # the binding key in the user property

PACKAGE_LOGGER = 'user.mqttreplicate'


# ------------------------------------------------------------------------------------------------
# waiting
# ------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------

def configure(station, broker, role, *, tls=False, user=None, ca_certs=None,
              instance=INSTANCE, binding_options=None, other_bindings=None, stanza=None,
              **options):
    """Write [Replicator] with one [[role]] (Requester or Responder) into weewx.conf.

    Connection options (host, port, credentials, [[[tls]]]) go in [Replicator], so the role
    inherits them; options go in [[role]]; the binding wx_binding has type = main;
    other_bindings ({name: {option: value}}) are replicated too.  stanza='MQTTReplicate'
    writes the earlier extension's stanza instead (default: Replicator)."""
    conn = broker.connection_options(tls=tls, user=user)
    if ca_certs is not None:
        conn['tls']['ca_certs'] = str(ca_certs)
    stanza_name = stanza or 'Replicator'

    def edit(config):
        config[stanza_name] = {}
        top = config[stanza_name]
        top['driver'] = 'user.mqttreplicate'
        top['min_delay'] = '1'
        top['max_delay'] = '2'
        top['status_heartbeat'] = TEST_HEARTBEAT
        for name, value in conn.items():
            if name == 'tls':
                top['tls'] = {k: str(v) for k, v in value.items()}
            else:
                top[name] = str(value)
        section = {k: str(v) for k, v in options.items() if v is not None}
        if role == 'Responder':
            section.setdefault('enable', 'true')
        binding = {'type': 'main'}
        binding.update(binding_options or {})
        section[instance] = {BINDING: binding}
        for name, values in (other_bindings or {}).items():
            section[instance][name] = dict(values)
        top[role] = section

    station.edit(edit)
    return station


def add_binding(station, name, filename):
    """Add a SQLite binding `name` (database file `filename`, the wview_extended schema, daily
    summaries) to a station's weewx.conf."""
    def edit(config):
        config['DataBindings'][name] = {
            'database': name + '_sqlite', 'table_name': 'archive',
            'manager': 'weewx.manager.DaySummaryManager',
            'schema': 'weewx.schemas.wview_extended.schema'}
        config['Databases'][name + '_sqlite'] = {'database_name': filename,
                                                 'database_type': 'SQLite'}
    station.edit(edit)
    return station


def new_record(ts, units='US'):
    """The simulator record for ts (the same values seed_history would store)."""
    return simulated_record(ts, 5, units)


def add_to_primary(station, records):
    """Insert records into a station's wx_binding (archive and daily summaries), as the
    primary's engine would: unless the station was seeded without them (rig.primary's
    loop_hilo), each with the LOOP highs and lows of its archive period (loop_accumulator),
    so that a live record's day differs from what the secondary's own update makes of it."""
    loop_hilo = getattr(station, 'loop_hilo', True)
    with station.open_manager(BINDING) as manager:
        if not loop_hilo:
            manager.addRecord(list(records), log_success=False)
            return
        for record in records:
            manager.addRecord(record, accumulator=loop_accumulator(record), log_success=False)


def read_for_live(station, ts):
    """(record, prev, days) of ts as MQTTResponder.new_archive_record reads them: the stored
    record without None values, the dateTime of the record before it, and its day's daily
    summaries through it (database.live_days: None if a newer record of that day is
    stored). Publish them all: a live record without its day's summaries leaves that day
    built on the secondary, which the service never does."""
    with station.open_manager(BINDING) as manager:
        record = manager.getRecord(ts)
        prev = database.previous_timestamp(manager, ts)
        days = database.live_days(manager, ts)
    return {k: v for k, v in record.items() if v is not None}, prev, days


def live_record(message):
    """The record of a live message as a subscriber got it, plain or compact."""
    return messages.LiveRecord.decode(messages.Envelope.of(message)).record


def publish_live(responder, station, ts, add=True):
    """The primary's engine stores record ts (unless add is False) and its responder
    publishes it live, with its day's summaries, as MQTTResponder.new_archive_record
    does."""
    if add:
        add_to_primary(station, [new_record(ts)])
    responder.publish_live(responder.bindings[KEY], *read_for_live(station, ts))


def stop_then_kill_broker(broker, node, total, more):
    """During a catch-up: stop the broker and start it again, let `more` records come, then
    kill it (SIGKILL) and start it again. Checks the catch-up was still going both times."""
    wait_until(lambda: node.requester.progress_count >= 1500, 30, 'the first pages')
    broker.stop()
    at_stop = node.requester.progress_count
    broker.start()
    wait_until(lambda: node.requester.progress_count >= at_stop + more, 30, 'more pages')
    broker.kill()
    at_kill = node.requester.progress_count
    broker.start()
    assert at_stop < at_kill < total, 'the catch-up ended before the broker went away'


def assert_same(primary, secondary, **kwargs):
    """The two stations' wx_binding databases are equal row by row (archive and daily
    summaries)."""
    diffs = compare_databases(primary, BINDING, secondary, BINDING, **kwargs)
    assert diffs == [], '\n'.join(diffs)


def error_lines(caplog, level=logging.ERROR):
    return ['%s %s: %s' % (r.levelname, r.name, r.getMessage()) for r in caplog.records
            if r.levelno >= level and r.name.startswith(PACKAGE_LOGGER)]


# ------------------------------------------------------------------------------------------------
# the requester, as cli.cmd_request builds it
# ------------------------------------------------------------------------------------------------

class RequesterNode:
    """Requester + Writer for every binding, started like cli.cmd_request starts them."""

    def __init__(self, config_dict):
        self.config_dict = config_dict
        self.options = cfg.parse_requester(config_dict)
        self.requester = Requester(self.options, config_dict)
        self.writer = Writer(self.requester)
        for binding in self.options.ordered_bindings():
            self.writer.add(binding, config_dict)
        self.stopped = False

    def start(self):
        self.writer.start()
        self.requester.start()
        return self

    @property
    def clientid(self):
        return self.options.connection.clientid

    @property
    def replica(self):
        """The replica of wx_binding."""
        return self.requester.replicas[KEY]

    @property
    def transport(self):
        return self.requester.transport

    def wait_connected(self, timeout=10.0):
        assert self.transport.wait_connected(timeout), \
            'requester not connected: %s' % self.transport.connect_error

    def check_writer(self):
        assert self.writer.is_alive(), 'the writer thread died: %r' % (self.writer.failed,)

    def caught_up(self):
        self.check_writer()
        return all(r.caught_up.is_set() for r in self.requester.replicas.values())

    def wait_caught_up(self, timeout=30.0):
        wait_until(self.caught_up, timeout, 'the requester to catch up (stored %d)'
                   % self.requester.progress_count)

    def wait_verified(self, timeout=20.0):
        """Wait until every binding's own verification after its catch-up is done."""
        wait_until(lambda: all(r.verifier.verified for r in self.requester.replicas.values()),
                   timeout, 'the requester\'s verification')

    def idle(self):
        """Nothing being caught up and the inbox empty."""
        self.check_writer()
        return not any(r.catching_up for r in self.requester.replicas.values()) \
            and self.writer.inbox.empty()

    def wait_position(self, ts, timeout=15.0):
        """Wait until wx_binding's newest stored record is ts and nothing is pending."""
        wait_until(lambda: self.replica.position >= ts and self.idle(), timeout,
                   'the secondary to store %s (at %s)' % (ts, self.replica.position))
        # the inbox may have handed the last item over just now: let it finish
        time.sleep(0.2)
        wait_until(self.idle, timeout, 'the writer to finish')

    def stop(self):
        if not self.stopped:
            self.stopped = True
            self.requester.stop()
            self.writer.stop()


# ------------------------------------------------------------------------------------------------
# the rig fixture
# ------------------------------------------------------------------------------------------------

class StationTemplates:
    """One station made by make_station (`weectl station create`) per unit system, copied for
    every test: a copy takes milliseconds, a new station a few tenths of a second."""

    def __init__(self, root):
        self.root = root
        self.templates = {}

    def get(self, units):
        if units not in self.templates:
            self.templates[units] = make_station(self.root, 'template-%s' % units.lower(),
                                                 units=units)
        return self.templates[units]


class Rig:
    """Makes stations, starts responders and requesters, and stops them all at the end."""

    def __init__(self, stations, templates, tmp_path):
        self.stations = stations
        self.templates = templates
        self.tmp_path = tmp_path
        self.responders = []
        self.nodes = []
        self.clients = []

    def station(self, name, units='US'):
        """A fresh station like make_station(tmp_path, name, units=units) makes."""
        station = self.templates.get(units).copy(self.tmp_path, name)
        return self.stations.adopt(station)

    def primary(self, broker, name='primary', count=0, units='US', start=START,
                loop_hilo=True, **options):
        """A primary seeded with count records; with loop_hilo its daily summaries hold
        LOOP highs and lows (tests/support/station.py loop_extremes), as a real station's
        do; without, they equal a rebuild of its archive: only for a secondary that cannot
        be given the primary's (protocol 1, other units), which rebuilds them."""
        station = self.station(name, units=units)
        station.loop_hilo = loop_hilo          # (add_to_primary's records too)
        if count:
            seed_history(station, start, count, loop_hilo=loop_hilo)
        options.setdefault('clientid', 'primary-%s' % uuid.uuid4().hex[:8])
        return configure(station, broker, 'Responder', **options)

    def secondary(self, broker, name='secondary', units='US', **options):
        station = self.station(name, units=units)
        options.setdefault('clientid', 'secondary-%s' % uuid.uuid4().hex[:8])
        return configure(station, broker, 'Requester', **options)

    def start_responder(self, station, wait=True):
        config_dict = station.config_dict()
        responder = Responder(cfg.parse_responder(config_dict), config_dict)
        self.responders.append(responder)
        responder.start()
        if wait:
            # subscribed, not only connected: a request published before the broker took
            # the responder's subscription would reach nobody
            assert responder.transport.wait_subscribed(10), \
                'responder not subscribed: %s' % responder.transport.connect_error
        return responder

    def start_requester(self, station, wait=True):
        node = RequesterNode(station.config_dict())
        self.nodes.append(node)
        node.start()
        if wait:
            node.wait_connected()
        return node

    def client(self, broker, **kwargs):
        """A test MQTT client (disconnected at the end)."""
        client = MqttClient(broker, **kwargs)
        self.clients.append(client)
        return client

    def stop_responder(self, responder):
        if responder in self.responders:
            self.responders.remove(responder)
            responder.stop()

    def cleanup(self):
        for node in self.nodes:
            try:
                node.stop()
            except Exception:
                pass
        for responder in self.responders:
            try:
                responder.stop()
            except Exception:
                pass
        for client in self.clients:
            try:
                client.disconnect()
            except Exception:
                pass


class JsonWatcher:
    """Collects JSON messages of a test client, by topic, and waits for one that matches."""

    def __init__(self, client):
        self.client = client
        self.seen = {}            # topic -> [json objects, oldest first]

    def _pull(self, timeout):
        import json
        try:
            message = self.client.get(timeout)
        except TimeoutError:
            return
        try:
            obj = json.loads(message.payload.decode('utf-8'))
        except ValueError:
            obj = message.payload
        self.seen.setdefault(message.topic, []).append(obj)

    def wait(self, topic, predicate=lambda obj: True, timeout=10.0):
        """The first message seen on topic (now or later) that satisfies predicate."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            objs = self.seen.get(topic, [])
            for obj in objs[checked:]:
                if isinstance(obj, dict) and predicate(obj):
                    return obj
            checked = len(objs)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('no matching message on %s within %.0f s; seen: %r'
                                     % (topic, timeout, objs[-3:]))
            self._pull(min(remaining, 0.2))


def retained_json(broker, topic, timeout=5.0):
    """The retained message on topic, as JSON, read by a fresh subscriber."""
    import json
    deadline = time.monotonic() + timeout
    with MqttClient(broker) as client:
        client.subscribe(topic)
        while True:
            message = client.expect(topic, timeout=max(deadline - time.monotonic(), 0.01))
            if message.retain:
                return json.loads(message.payload.decode('utf-8'))
            # published while we subscribed (none was retained yet, or it came first): it
            # is retained now; a new subscription brings it as such
            client.unsubscribe(topic)
            client.subscribe(topic)
