"""Defects of the requester found by reading the code, each against a real broker and real
SQLite stations: the responder's clock, repeated and wrong page ends, older records for the
engine, bounded inboxes."""

import json
import queue
import threading
import time

import pytest

from tests.integration.harness import (BINDING, KEY, START, STEP, assert_same, error_lines,
                                       new_record)
from tests.support.mqtt import user_properties
from tests.support.station import seed_history
from user.mqttreplicate import messages, protocol, requester, target
from user.mqttreplicate import replica as replica_module

pytestmark = pytest.mark.integration

STATUS = 'replicate/status/weewx'


def _status(connected):
    return json.dumps({'state': 'online', 'role': 'responder', 'connected': connected,
                       'bindings': {KEY: {'newest': START}}, 'nodes': {}}).encode()


def _requests(client, quiet=1.0):
    return [m for m in client.drain(quiet) if m.topic == 'replicate/request/weewx'
            and user_properties(m).get('op', 'records') == 'records']


def test_responder_statuses_restart_a_catchup_only_when_it_reconnected(rig, broker, caplog):
    """The responder's `connected` is its own clock, minutes away from ours: statuses that
    repeat it say nothing new; only a new value (a new connection) makes us ask again."""
    secondary = rig.secondary(broker, startup_max_tries=50, startup_wait_before_retry=1)
    monitor = rig.client(broker)
    monitor.subscribe('replicate/request/#')
    node = rig.start_requester(secondary)            # nobody answers
    asked = _requests(monitor)
    assert len(asked) == 1 and asked[0].payload == b'0'
    skewed = int(time.time()) + 600                   # the primary's clock is 10 min ahead
    fake = rig.client(broker)
    # the first status this requester sees tells nothing (retained, or queued for its
    # session); the same connection again and again says nothing new either (before: a
    # new catch-up each time, as its `connected` is later than our clock's time of asking)
    for _ in range(4):
        fake.publish(STATUS, _status(skewed), qos=1, retain=True)
    assert _requests(monitor) == []
    fake.publish(STATUS, _status(skewed + 5), qos=1, retain=True)   # it reconnected
    asked = _requests(monitor)
    assert len(asked) == 1 and asked[0].payload == b'0'
    # offline, then online again: a new connection, whatever its clock says
    fake.publish(STATUS, json.dumps({'state': 'offline'}).encode(), qos=1, retain=True)
    fake.publish(STATUS, _status(skewed - 3600), qos=1, retain=True)
    asked = _requests(monitor)
    assert len(asked) == 1 and asked[0].payload == b'0'
    assert node.replica.catching_up
    node.stop()
    assert error_lines(caplog) == []


class PageServer:
    """Answers the requester's records requests from the primary's database like the
    responder does, with a twist: every end message is sent twice (a QoS 1 duplicate), or
    the first page ends with more=1 and no last."""

    def __init__(self, client, station, page_size, bad_end=False):
        self.client = client
        self.station = station
        self.page_size = page_size
        self.bad_end = bad_end
        self.requests = []
        client.subscribe('replicate/request/weewx')

    def serve(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.client.get(0.2)
            except TimeoutError:
                continue
            props = user_properties(message)
            if props.get('op', 'records') != 'records' or message.topic.startswith(
                    'replicate/status'):
                continue
            since = int(message.payload)
            self.requests.append(since)
            self._answer(message, since)

    def _answer(self, message, since):
        import sqlite3
        con = sqlite3.connect(str(self.station.db_path(BINDING)))
        con.row_factory = sqlite3.Row
        rows = con.execute('SELECT * FROM archive WHERE dateTime > ? ORDER BY dateTime '
                           'LIMIT ?', (since, self.page_size)).fetchall()
        con.close()
        records = [{k: r[k] for k in r.keys() if r[k] is not None} for r in rows]
        more = len(records) == self.page_size
        end = {'data_binding': KEY, 'protocol': '2', 'encoding': 'json', 'seq': 0,
               'count': len(records), 'end': 1, 'more': int(more)}
        if records and not (self.bad_end and len(self.requests) == 1):
            end['last'] = records[-1]['dateTime']
        props = dict(CorrelationData=message.properties.CorrelationData)
        payload = json.dumps(records).encode()
        copies = 1 if self.bad_end else 2
        for _ in range(copies):
            self.client.publish(message.properties.ResponseTopic, payload, qos=1,
                                user_properties=end, **props)


def test_a_repeated_page_end_asks_for_the_next_page_once(rig, broker, caplog):
    # the database only; PageServer sends no daily summaries (the secondary rebuilds them)
    primary = rig.primary(broker, count=1000, loop_hilo=False)
    secondary = rig.secondary(broker, page_size=200)
    server = PageServer(rig.client(broker), primary, page_size=200)
    node = rig.start_requester(secondary)
    server.serve(timeout=8)
    node.wait_caught_up(10)
    # five full pages and the empty one after them, each asked for once
    assert server.requests == [0] + [START + (200 * i - 1) * STEP for i in range(1, 6)]
    assert secondary.count_records() == 1000
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_a_page_end_with_more_and_no_last_is_rejected(rig, broker, caplog):
    """Before: a TypeError on the loop thread (since=None). Now one clear line, a counter,
    and the page is asked for again after page_timeout."""
    primary = rig.primary(broker, count=300, loop_hilo=False)     # (PageServer: no summaries)
    secondary = rig.secondary(broker, page_size=200, page_timeout=2)
    server = PageServer(rig.client(broker), primary, page_size=200, bad_end=True)
    node = rig.start_requester(secondary)
    server.serve(timeout=10)
    node.wait_caught_up(10)
    assert node.requester.rejected == 1
    assert any('more=1 and last=None' in r.getMessage() for r in caplog.records)
    assert server.requests[:2] == [0, 0]        # the bad page, then the same page again
    assert secondary.count_records() == 300
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


class FakeRequester:
    """What a Replica needs of its Requester (its host and its Link), and no MQTT: requests
    and acks are recorded."""

    def __init__(self, options):
        self.options = options
        self.faults = requester.RateLimitedLog(requester.log)
        self.progress_count = 0
        self.counts = {}
        self.acked = []
        self.stopping = threading.Event()

    @property
    def link(self):
        return self

    def connected(self):
        return False

    def ack(self, message):
        self.acked.append(message)

    def progress(self, n):
        self.progress_count += n

    def count(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def send_ack(self, replica):
        pass

    def send_records(self, *args, **kwargs):
        return protocol.new_correlation()

    send_digest = send_records


def _main_replica(rig, broker, delivered):
    from user.mqttreplicate import config as cfg
    from user.mqttreplicate import database
    secondary = rig.secondary(broker)
    config_dict = secondary.config_dict()
    options = cfg.parse_requester(config_dict)
    mgr_dict = database.manager_dict(config_dict, BINDING)
    replica = requester.Replica(FakeRequester(options), options.main_binding,
                                queue.Queue(requester.INBOX_SIZE),
                                lambda: target.TargetDatabase(mgr_dict),
                                deliver=lambda record, days=None: delivered.append(record))
    return secondary, replica


def test_an_older_main_record_is_stored_here_not_sent_to_the_engine(rig, broker):
    """The engine sees records strictly in dateTime order: one older than the newest stored
    (a protocol-1 redelivery, a primary whose clock stepped back) is stored directly, with
    its day's summary, and the summaries' completeness mark stays where it was."""
    delivered = []
    secondary, replica = _main_replica(rig, broker, delivered)
    seed_history(secondary, START, 10)
    seed_history(secondary, START + 20 * STEP, 10)   # a hole at 10..19
    day = START - START % 86400                      # (the record at 00:00 is the day before's)
    in_day = _day_count(secondary, day)
    assert in_day == 19
    replica.open()
    try:
        newest = replica.position
        assert newest == START + 29 * STEP
        last_update = replica.store.manager._read_metadata('lastUpdate')
        older = new_record(START + 15 * STEP)
        assert replica.sink.store_one(dict(older))
        assert delivered == []                          # not to the engine
        assert replica.position == newest
        assert replica.store.existing(older['dateTime'], older['dateTime'])
        assert replica.store.manager._read_metadata('lastUpdate') == last_update
        newer = new_record(START + 30 * STEP)
        assert replica.sink.store_one(dict(newer))
        assert [r['dateTime'] for r in delivered] == [newer['dateTime']]
    finally:
        replica.close()
    assert _day_count(secondary, day) == in_day + 1   # the older one is in its day's summary


def _day_count(station, day):
    import sqlite3
    con = sqlite3.connect(str(station.db_path(BINDING)))
    try:
        return con.execute('SELECT count FROM archive_day_outTemp WHERE dateTime = ?',
                           (day,)).fetchone()[0]
    finally:
        con.close()


def test_a_full_inbox_drops_an_item_after_a_while_and_acknowledges_it(rig, broker,
                                                                       monkeypatch):
    monkeypatch.setattr(replica_module, 'POST_TIMEOUT', 0.2)
    delivered = []
    _, replica = _main_replica(rig, broker, delivered)
    assert replica.inbox.maxsize == requester.INBOX_SIZE
    acked = replica.host.acked
    for _ in range(requester.INBOX_SIZE):
        assert replica.post(replica_module.Item('wake'))
    message = object()
    started = time.monotonic()
    assert not replica.post(replica_module.Item('live', messages.LiveRecord(KEY, new_record(START)),
                                                  message=message))
    assert time.monotonic() - started >= 0.2
    assert acked == [message]                        # its slot in the broker's window freed
    assert replica.host.counts == {'dropped': 1}


def test_a_failure_of_the_writer_is_survived_and_the_catchup_starts_again(rig, broker,
                                                                           caplog):
    """A store that fails in the middle of a catch-up (a disk error, a MySQL server gone
    away): the writer logs it and goes on; the binding catches up again from what its
    database holds, so nothing is skipped. (The writer thread used to die with it, and the
    `request` command with it.)"""
    import sqlite3
    store_bulk = target.TargetDatabase.store_bulk
    calls = []

    def failing_once(self, records, day_rows=None):
        calls.append(len(records))
        if len(calls) == 3:
            raise sqlite3.OperationalError('disk I/O error')
        return store_bulk(self, records, day_rows)

    primary = rig.primary(broker, count=1000)
    secondary = rig.secondary(broker, page_size=200)
    rig.start_responder(primary)
    original, target.TargetDatabase.store_bulk = target.TargetDatabase.store_bulk, \
        failing_once
    try:
        node = rig.start_requester(secondary)
        node.wait_position(START + 999 * STEP, timeout=60)
        assert node.writer.is_alive()
        node.stop()
    finally:
        target.TargetDatabase.store_bulk = original
    assert len(calls) > 5
    assert_same(primary, secondary)
    errors = error_lines(caplog)
    assert len(errors) == 1 and 'requester: writer: OperationalError: disk I/O error' \
        in errors[0], errors
