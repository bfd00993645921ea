"""Protocol 1 (SPEC 5.1): the earlier extension's peers, written here from the description.

A protocol-1 request has no `protocol` user property: payload = ASCII integer `since`; the
answer is one message per record (payload = JSON object, user property data_binding only),
with no end marker. Live records are JSON objects with data_binding.

Protocol 1 carries no daily summaries: a secondary of a protocol-1 responder builds them
from the records, so these primaries' summaries are a rebuild of their archive too
(loop_hilo=False), for the row-by-row comparisons."""

import json
import sqlite3
import threading
import time

import pytest

from tests.integration.harness import (BINDING, KEY, START, STEP, assert_same, error_lines,
                                       new_record, read_for_live, add_to_primary)
from tests.support.mqtt import user_properties
from tests.support.station import seed_history
from user.mqttreplicate import target

pytestmark = pytest.mark.integration


def test_protocol1_requester_gets_one_message_per_record(rig, broker, caplog):
    # responder pages of 200: a protocol-1 answer spans several reads
    primary = rig.primary(broker, loop_hilo=False, count=450, page_size=200, batch_size=50)
    responder = rig.start_responder(primary)
    legacy = rig.client(broker)
    legacy.subscribe('replicate/response/legacy-node')
    legacy.subscribe('replicate/archive/weewx')
    legacy.publish('replicate/request/weewx', b'0', user_properties={'data_binding': KEY},
                   ResponseTopic='replicate/response/legacy-node')
    messages = []
    while len(messages) < 450:
        messages.append(legacy.expect('replicate/response/legacy-node', timeout=10))
    messages += legacy.drain(1.0)                   # and nothing else: no end marker
    assert len(messages) == 450
    stamps = []
    for message in messages:
        assert message.topic == 'replicate/response/legacy-node'
        assert user_properties(message) == {'data_binding': KEY}
        record = json.loads(message.payload)
        assert isinstance(record, dict) and record['usUnits'] == 1
        stamps.append(record['dateTime'])
    assert stamps == [START + i * STEP for i in range(450)]
    stored, *_ = read_for_live(primary, START + 7 * STEP)
    assert json.loads(messages[7].payload) == stored

    # A live record is a JSON object a protocol-1 requester reads unchanged.
    ts = START + 450 * STEP
    add_to_primary(primary, [new_record(ts)])
    record, prev, days = read_for_live(primary, ts)
    responder.publish_live(responder.bindings[KEY], record, prev, days)
    live = legacy.expect('replicate/archive/weewx', timeout=5)
    while json.loads(live.payload)['dateTime'] != ts:   # (the newest at connection, maybe)
        live = legacy.expect('replicate/archive/weewx', timeout=5)
    assert user_properties(live)['data_binding'] == KEY
    assert json.loads(live.payload) == record
    assert error_lines(caplog) == []


def test_protocol1_answer_respects_the_broker_queue(rig, make_broker):
    """A protocol-1 requester that stores each record in 2 ms, behind a broker that queues
    100 messages per client (Mosquitto's default is 1000: 3.5 days of 5-minute records)."""
    broker = make_broker(max_queued_messages=100)
    primary = rig.primary(broker, loop_hilo=False, count=400)
    rig.start_responder(primary)
    legacy = rig.client(broker)
    received = []

    def slow(client, userdata, message):
        time.sleep(0.002)                           # storing the record
        received.append(json.loads(message.payload)['dateTime'])

    legacy.client.on_message = slow
    legacy.subscribe('replicate/response/slow-legacy')
    legacy.publish('replicate/request/weewx', b'0', user_properties={'data_binding': KEY},
                   ResponseTopic='replicate/response/slow-legacy')
    deadline = time.monotonic() + 15
    have, progress = 0, time.monotonic()
    while len(received) < 400 and time.monotonic() < deadline \
            and time.monotonic() - progress < 1.5:          # until nothing comes any more
        time.sleep(0.1)
        if len(received) > have:
            have, progress = len(received), time.monotonic()
    assert len(received) == 400, 'only %d of 400 records arrived' % len(received)
    assert received == sorted(received)


class Protocol1Responder:
    """A protocol-1 responder, as the earlier extension's behaves: answers every request
    (payload `since`) by publishing each newer record of the primary's database as its own
    QoS 1 JSON message, with only the user property data_binding, to the request's
    ResponseTopic, as fast as it can (no throttle, no end marker). It publishes live records
    the same way, on replicate/archive/weewx."""

    def __init__(self, client, database, rate=None, lost=()):
        """rate: messages a second at most (None: as fast as it can). lost: dateTimes left
        out of the first answer, as a broker whose queue for the requester overflowed
        drops them, without a word."""
        self.client = client
        self.database = database
        self.rate = rate
        self.lost = set(lost)
        self.requests = []
        self.stopping = threading.Event()
        client.subscribe('replicate/request/weewx')
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def records_since(self, since):
        """The records, one at a time as they are read: the first goes out at once, even
        when the test process is busy (a list of thousands took up to 2 s to build)."""
        con = sqlite3.connect(str(self.database))
        con.row_factory = sqlite3.Row
        try:
            for row in con.execute('SELECT * FROM archive WHERE dateTime > ? ORDER BY dateTime',
                                   (since,)):
                yield {k: row[k] for k in row.keys() if row[k] is not None}
        finally:
            con.close()

    def _run(self):
        while not self.stopping.is_set():
            try:
                message = self.client.get(0.2)
            except TimeoutError:
                continue
            try:
                since = int(message.payload.decode('ascii'))
            except (UnicodeDecodeError, ValueError):
                continue                            # e.g. a protocol-2 ack: not for us
            response_topic = getattr(message.properties, 'ResponseTopic', None)
            binding = user_properties(message).get('data_binding')
            self.requests.append((since, response_topic, binding))
            started = time.monotonic()
            lost, self.lost = self.lost, set()
            for n, record in enumerate(self.records_since(since)):
                if record['dateTime'] in lost:
                    continue
                self.client.publish(response_topic, json.dumps(record).encode('utf-8'), qos=1,
                                    user_properties={'data_binding': binding}, wait=False)
                if self.rate and n % 100 == 99:
                    time.sleep(max(0.0, started + (n + 1) / self.rate - time.monotonic()))

    def publish_live(self, record):
        self.client.publish('replicate/archive/weewx', json.dumps(record).encode('utf-8'),
                            qos=1, user_properties={'data_binding': KEY})

    def stop(self):
        self.stopping.set()
        self.thread.join(5)


def test_protocol1_responder_serves_our_requester(rig, broker, caplog):
    primary = rig.primary(broker, loop_hilo=False, count=200)    # its database only
    secondary = rig.secondary(broker, page_size=100, startup_max_tries=1,
                              startup_wait_before_retry=1)
    _, have = _seed_some(secondary)
    fake = Protocol1Responder(rig.client(broker), primary.db_path(BINDING))
    try:
        node = rig.start_requester(secondary)
        node.wait_caught_up(20)                      # by quiet time: no end marker comes
        assert node.replica.legacy
        assert node.requester.progress_count == 100
        assert fake.requests[0] == (have, 'replicate/response/%s' % node.clientid, KEY)
        assert_same(primary, secondary)

        # and a protocol-1 live record (no prev) is stored too
        ts = START + 200 * STEP
        add_to_primary(primary, [new_record(ts)])
        record, *_ = read_for_live(primary, ts)
        fake.publish_live(record)
        node.wait_position(ts, timeout=5)
        node.stop()
    finally:
        fake.stop()
    assert secondary.count_records() == 201
    assert_same(primary, secondary)
    assert node.requester.rejected == 0
    assert error_lines(caplog) == []


def test_protocol1_flood_reaches_every_record(rig, make_broker, caplog):
    """3,000 records flooded at full speed through a broker that queues 1,000 messages per
    client (Mosquitto's default): every one is stored, and the catch-up is complete only
    after an answer that brought nothing new."""
    broker = make_broker(max_queued_messages=1000)
    primary = rig.primary(broker, loop_hilo=False, count=3000)
    secondary = rig.secondary(broker, startup_max_tries=1, startup_wait_before_retry=1)
    fake = Protocol1Responder(rig.client(broker), primary.db_path(BINDING))
    try:
        node = rig.start_requester(secondary)
        node.wait_caught_up(90)
        assert secondary.count_records() == 3000
        # the last request asked from the newest record and got nothing new
        assert fake.requests[-1][0] == START + 2999 * STEP
        node.stop()
    finally:
        fake.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_protocol1_partial_answer_is_never_complete(rig, broker, monkeypatch, caplog):
    """Records beyond what the requester may hold are dropped here; it asks again from its
    newest record, round after round, and says it is caught up only with all of them."""
    from user.mqttreplicate import replica
    monkeypatch.setattr(replica, 'MAX_LEGACY', 400)
    store_bulk = target.TargetDatabase.store_bulk

    def slow_store_bulk(self, records, day_rows=None):  # a slow disk: the flood outruns it
        time.sleep(0.5)                         # (more than 400 records arrive meanwhile,
        return store_bulk(self, records, day_rows)  # even on a loaded machine)

    monkeypatch.setattr(target.TargetDatabase, 'store_bulk', slow_store_bulk)
    primary = rig.primary(broker, loop_hilo=False, count=2000)
    secondary = rig.secondary(broker, startup_max_tries=1, startup_wait_before_retry=1)
    fake = Protocol1Responder(rig.client(broker), primary.db_path(BINDING))
    counts = []
    try:
        node = rig.start_requester(secondary)
        node.wait_caught_up(90)
        counts.append(secondary.count_records())
        node.stop()
    finally:
        fake.stop()
    assert counts == [2000]
    assert any('some dropped here' in r.getMessage() for r in caplog.records)
    since = [request[0] for request in fake.requests]
    # the first answer was partial, a later one complete, the last brought nothing new
    assert len(since) >= 3 and since == sorted(set(since))
    assert since[-1] == START + 1999 * STEP
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_protocol1_round_ends_only_when_the_flood_stops(rig, broker, monkeypatch, caplog):
    """The requester's buffer overflows early in a 3-second flood, and storing stops
    meanwhile (what was kept is stored) for about twice the requester's patience (1 s): the
    answer is over only when nothing has arrived for a while, not when nothing was stored
    for a while. Ending the round mid-flood would take the rest of the first flood as new,
    jump over what was dropped and leave a hole."""
    from user.mqttreplicate import replica
    monkeypatch.setattr(replica, 'MAX_LEGACY', 300)
    store_bulk = target.TargetDatabase.store_bulk
    calls = []

    def slow_at_first(self, records, day_rows=None):    # a disk that is slow at first
        calls.append(len(records))
        if len(calls) <= 3:
            time.sleep(0.5)                     # 1,500 records arrive meanwhile: overflow
        return store_bulk(self, records, day_rows)

    monkeypatch.setattr(target.TargetDatabase, 'store_bulk', slow_at_first)
    primary = rig.primary(broker, loop_hilo=False, count=3000)
    secondary = rig.secondary(broker, startup_max_tries=1, startup_wait_before_retry=1)
    fake = Protocol1Responder(rig.client(broker), primary.db_path(BINDING), rate=1000)
    try:
        node = rig.start_requester(secondary)
        node.wait_caught_up(90)
        stored = secondary.count_records()
        node.stop()
    finally:
        fake.stop()
    assert stored == 3000
    assert any('some dropped here' in r.getMessage() for r in caplog.records)
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_protocol1_records_lost_on_the_way_are_found(rig, broker, caplog):
    """Three records of the first answer never arrive (a broker's queue overflowed), and
    the primary itself has a real gap (an outage). The gaps are asked about again; the lost
    records arrive, the outage brings nothing, and the catch-up ends."""
    primary = rig.primary(broker, loop_hilo=False, count=400)
    seed_history(primary, START + 500 * STEP, 400, loop_hilo=False)   # no records 400..499
    secondary = rig.secondary(broker, startup_max_tries=1, startup_wait_before_retry=1)
    lost = [START + i * STEP for i in (200, 201, 700)]
    fake = Protocol1Responder(rig.client(broker), primary.db_path(BINDING), lost=lost)
    try:
        node = rig.start_requester(secondary)
        node.wait_caught_up(60)
        node.stop()
    finally:
        fake.stop()
    assert secondary.count_records() == 800
    assert_same(primary, secondary)
    gaps = [r.getMessage() for r in caplog.records if 'gap in the protocol-1' in r.getMessage()]
    assert gaps and str(START + 199 * STEP) in gaps[0]
    assert error_lines(caplog) == []


def _seed_some(station):
    from tests.support.station import seed_history
    return seed_history(station, START, 100, loop_hilo=False)
