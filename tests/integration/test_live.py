"""Live records after a catch-up: stored promptly, holes filled from the primary, duplicates
and reordering harmless."""

import logging
import time

import pytest
import weewx
import weewx.manager

from tests.integration.harness import (BINDING, KEY, START, STEP, add_to_primary,
                                       assert_same, configure, error_lines, new_record,
                                       read_for_live, wait_until)
from tests.support.conversation import Conversation, collect, is_catchup_request, records
from tests.support.measure import Fault, in_process
from tests.support.mutual import wait_mutual_knowledge
from tests.support.station import generate_records, seed_history
from user.mqttreplicate.responder import MQTTResponder

pytestmark = pytest.mark.integration

COUNT = 600
LAST = START + (COUNT - 1) * STEP


def caught_up_pair(rig, broker, primary=None, **secondary_options):
    if primary is None:
        primary = rig.primary(broker, count=COUNT, batch_size=100)
    secondary_options.setdefault('page_size', 200)
    secondary = rig.secondary(broker, **secondary_options)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    assert node.replica.position == LAST
    return primary, secondary, responder, node


def publish(responder, primary, ts):
    """Publish the primary's record ts live, as the service does."""
    record, prev, days = read_for_live(primary, ts)
    responder.publish_live(responder.bindings[KEY], record, prev, days)
    return prev


def first_catchup_request(monitor, timeout=10.0):
    """The first catch-up request monitor receives from now on (acks and the verification's
    digests are no catch-up requests)."""
    return collect(monitor, lambda ms: any(is_catchup_request(m) for m in ms), timeout,
                   'a catch-up request')[-1]


def test_live_records_are_stored_and_a_hole_is_filled(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'live record missing (hole), record imported out of order on the primary',
                  'hole found through `prev` and requested; old record stored with its summary')
    # The primary lacks one old record (it will be imported later, out of order).
    primary = rig.station('primary')
    missing = START + 100 * STEP
    seed_history(primary, START, 0, records=[r for r in generate_records(START, COUNT)
                                            if r['dateTime'] != missing])
    configure(primary, broker, 'Responder', clientid='hole-primary', batch_size=100)
    primary, secondary, responder, node = caught_up_pair(rig, broker, primary=primary)
    stored_before = node.replica.stored
    assert secondary.count_records() == COUNT - 1

    # In order: each one is stored on its own, promptly.
    for i in (1, 2, 3):
        ts = LAST + i * STEP
        add_to_primary(primary, [new_record(ts)])
        started = time.monotonic()
        assert publish(responder, primary, ts) == ts - STEP
        node.wait_position(ts, timeout=5)
        assert time.monotonic() - started < 2.5, 'live record %s took too long' % ts
    assert node.replica.stored - stored_before == 3
    assert_same(primary, secondary)

    # A hole: five records on the primary, only the newest published. Its prev is newer than
    # the secondary's newest record, so the secondary asks for the missing range.
    monitor = rig.client(broker)
    monitor.subscribe('replicate/request/#')
    add_to_primary(primary, [new_record(LAST + i * STEP) for i in range(4, 9)])
    newest = LAST + 8 * STEP
    assert publish(responder, primary, newest) == LAST + 7 * STEP
    node.wait_position(newest, timeout=10)
    # (subscribed after the first catch-up: the hole's request is the first one it sees)
    request = first_catchup_request(monitor)
    assert request.payload == str(LAST + 3 * STEP).encode('ascii')
    assert any('hole before live record' in r.getMessage() for r in caplog.records)
    assert secondary.count_records() == COUNT - 1 + 8
    assert_same(primary, secondary)

    # An old record imported on the primary, published live: its prev is older than the
    # secondary's newest record, so it is simply stored, daily summary included.
    add_to_primary(primary, [new_record(missing)])
    assert publish(responder, primary, missing) == missing - STEP
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        wait_until(lambda: secondary.count_records() == COUNT + 8, 5, 'the imported record')
        wait_until(node.idle, 5, 'the writer to finish')
    wait_mutual_knowledge(broker, primary, [secondary])
    figures.assert_clean()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


class FakeEngine:
    """What MQTTResponder needs of weewx.engine.StdEngine: bind() and db_binder."""

    def __init__(self, config_dict):
        self.db_binder = weewx.manager.DBBinder(config_dict)
        self.callbacks = {}

    def bind(self, event_type, callback):
        self.callbacks.setdefault(event_type, []).append(callback)

    def dispatch(self, event):
        for callback in self.callbacks.get(event.event_type, []):
            callback(event)


def test_live_records_from_the_service(rig, broker, caplog):
    """The WeeWX service (MQTTResponder) publishes each NEW_ARCHIVE_RECORD; the secondary
    stores it."""
    primary = rig.primary(broker, count=300)
    secondary = rig.secondary(broker)
    engine = FakeEngine(primary.config_dict())
    service = MQTTResponder(engine, primary.config_dict())
    try:
        assert service.responder is not None
        assert service.responder.transport.wait_connected(10)
        node = rig.start_requester(secondary)
        node.wait_caught_up(20)
        last = START + 299 * STEP
        manager = engine.db_binder.get_manager(BINDING)
        for i in (1, 2):
            record = new_record(last + i * STEP)
            manager.addRecord(record, log_success=False)
            engine.dispatch(weewx.Event(weewx.NEW_ARCHIVE_RECORD, record=record,
                                        origin='hardware'))
            node.wait_position(last + i * STEP, timeout=5)
        # (and maybe the newest record at connection, if it had not been published yet)
        assert service.responder.counters['live'] >= 2
    finally:
        service.shutDown()
        engine.db_binder.close()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_duplicates_and_reordering_are_harmless(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'QoS 1 duplicates, out-of-order live records, every catch-up page delivered '
                  'again',
                  "stored count = primary's; no rejection; no error line")
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate')
    capture = rig.client(broker)
    capture.subscribe('replicate/request/#')
    capture.subscribe('replicate/response/#')
    primary, secondary, responder, node = caught_up_pair(rig, broker)
    # the catch-up's pages (not the answer to the verification that follows it)
    talk = Conversation.collect(capture, Conversation.catchup_done)
    pages = [m for r in talk.catchup_requests() for m in talk.answers(r)]
    assert {r['dateTime'] for m in pages for r in records(m)} == set(range(START, LAST + 1, STEP))
    r1, r2, r3, r4 = (LAST + i * STEP for i in (1, 2, 3, 4))
    add_to_primary(primary, [new_record(ts) for ts in (r1, r2, r3)])

    # The same live record twice.
    publish(responder, primary, r1)
    publish(responder, primary, r1)
    node.wait_position(r1, timeout=5)
    # Out of order: r3 before r2 (r3's prev is r2, which the secondary lacks: a hole).
    publish(responder, primary, r3)
    node.wait_position(r3, timeout=10)
    publish(responder, primary, r2)
    # An old record again.
    publish(responder, primary, START + 100 * STEP)
    # Every page of the catch-up again (their requests are long answered).
    for message in pages:
        capture.publish(message.topic, message.payload, qos=1, properties=message.properties)
    # Then the next record (only now on the primary, so that no catch-up brings it): the
    # requester handles its messages in order, so once r4 is stored, everything above has
    # been handled.
    add_to_primary(primary, [new_record(r4)])
    publish(responder, primary, r4)
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        node.wait_position(r4, timeout=10)
    wait_mutual_knowledge(broker, primary, [secondary])
    figures.assert_clean()

    assert node.replica.stored == COUNT + 4
    assert secondary.count_records() == COUNT + 4
    assert_same(primary, secondary)
    assert node.requester.rejected == 0
    assert error_lines(caplog) == []
