"""Signed messages (SPEC 5.7): with one shared_secret on both sides every message carries a
valid sig and replication works; a message without a valid sig is rejected and counted
before anything looks at it, whoever sends it."""

import json
import logging
import socket
import time

import pytest

from tests.integration.harness import (KEY, START, STEP, JsonWatcher, assert_same, error_lines,
                                       new_record, publish_live, retained_json, wait_until)
from tests.support.conversation import collect
from tests.support.measure import Fault, in_process
from tests.support.mqtt import user_properties
from tests.support.mutual import wait_mutual_knowledge

from user.mqttreplicate import config as cfg
from user.mqttreplicate import protocol
from user.mqttreplicate.transport import Transport

pytestmark = pytest.mark.integration

SECRET = 'Zr8!long shared secret, with a comma'
COUNT = 600
LAST = START + (COUNT - 1) * STEP
ATTACKER_TOPIC = 'replicate/response/attacker'
REJECTED_TEXT = 'rejected a message without a valid signature on '


def valid(message, secret=SECRET):
    """True if a message received by a test client carries a valid signature."""
    try:
        protocol.check_signature(secret, message.payload,
                                 getattr(message.properties, 'CorrelationData', None),
                                 getattr(message.properties, 'UserProperty', None) or ())
        return True
    except protocol.SignatureError:
        return False


def signature_lines(caplog):
    return [r.getMessage() for r in caplog.records if REJECTED_TEXT in r.getMessage()]


def signed_pair(rig, broker, count=COUNT, primary_secret=SECRET, secondary_secret=SECRET,
                **secondary_options):
    primary = rig.primary(broker, count=count, shared_secret=primary_secret, batch_size=50)
    secondary = rig.secondary(broker, shared_secret=secondary_secret, page_size=200,
                              **secondary_options)
    return primary, secondary


def test_same_secret_replicates_and_signs_everything(rig, broker, caplog):
    primary, secondary = signed_pair(rig, broker)
    spy = rig.client(broker)
    spy.subscribe('replicate/#')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    assert node.options.connection.shared_secret == SECRET
    assert SECRET not in node.options.connection.describe()

    # catch-up: several pages of several batches
    node.wait_caught_up(30)
    assert secondary.count_records() == COUNT
    assert_same(primary, secondary)

    # live, in order
    for i in (1, 2, 3):
        publish_live(responder, primary, LAST + i * STEP)
        node.wait_position(LAST + i * STEP, timeout=5)
    assert_same(primary, secondary)

    # the requester read the responder's signed status: it knows the primary's newest record
    wait_until(lambda: node.replica.primary_newest == LAST + 3 * STEP, 15,
               'the requester to learn the primary newest record from its status')
    wait_until(lambda: ((responder.status()['nodes'].get(node.clientid) or {}).get(KEY) or {})
               .get('last') == LAST + 3 * STEP, 15, 'the ack of the last live record')

    node.stop()
    rig.stop_responder(responder)
    # everything either side published, up to the last: both final 'offline' statuses
    finals = {'replicate/status/weewx', 'replicate/status/weewx/%s' % node.clientid}

    def offline(message):
        return message.topic in finals and json.loads(message.payload).get('state') == 'offline'
    messages = collect(spy, lambda ms: {m.topic for m in ms if offline(m)} == finals, 15,
                       "both sides' final 'offline' status")
    kinds = {(m.topic.rsplit('/', 1)[0], user_properties(m).get('op', '-')) for m in messages}
    # requests, acks, pages, live records, both statuses and both final 'offline' messages
    assert {('replicate/request', 'records'), ('replicate/request', 'ack'),
            ('replicate/response', '-'), ('replicate/archive', '-'),
            ('replicate/status', '-'), ('replicate/status/weewx', '-')} <= kinds, kinds
    unsigned = [(m.topic, user_properties(m)) for m in messages if not valid(m)]
    assert unsigned == []
    assert [m for m in messages if valid(m, secret='other')] == []
    assert any(json.loads(m.payload).get('state') == 'offline' for m in messages
               if m.topic.startswith('replicate/status/'))

    assert node.requester.rejected == 0 and node.transport.rejected_signatures == 0
    assert responder.counters['rejected'] == 0
    assert responder.transport.rejected_signatures == 0
    assert signature_lines(caplog) == []
    assert error_lines(caplog) == []
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def test_forged_live_records_and_pages_are_rejected(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'forged live records (unsigned, signed with another secret, a genuine '
                  "signature on a tampered payload) and a forged page, with a shared_secret",
                  'one log line per kind and a counter; nothing stored; the next genuine record '
                  'is stored; the status counts the rejections')
    primary, secondary = signed_pair(rig, broker, count=200)
    last = START + 199 * STEP
    spy = rig.client(broker)
    spy.subscribe('replicate/archive/#')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    # the responder publishes its newest record when it connects: a genuine signed message
    genuine = spy.expect('replicate/archive/weewx', timeout=5)
    assert valid(genuine)
    spy.drain(0.3)

    attacker = rig.client(broker)
    forged = {k: v for k, v in new_record(last + STEP).items() if v is not None}
    forged['outTemp'] = 999.0
    payload = json.dumps(forged).encode('utf-8')
    props = {'data_binding': KEY, 'protocol': '2', 'prev': last}
    # 1. well formed, unsigned
    attacker.publish('replicate/archive/weewx', payload, user_properties=props)
    # 2. signed with another secret
    other = [(k, str(v)) for k, v in props.items()]
    other.append(('sig', protocol.sign('not the secret', payload, None, other)))
    attacker.publish('replicate/archive/weewx', payload, user_properties=dict(other))
    # 3. a genuine message's properties (signature included) on a tampered payload
    attacker.publish('replicate/archive/weewx', payload,
                     user_properties=dict(genuine.properties.UserProperty))
    # 4. a forged page on the requester's response topic, signed with another secret
    page = [('data_binding', KEY), ('protocol', '2'), ('seq', '0'), ('count', '1'),
            ('end', '1'), ('more', '0'), ('last', str(last + STEP))]
    page.append(('sig', protocol.sign('not the secret', b'[%s]' % payload, b'c', page)))
    attacker.publish('replicate/response/%s' % node.clientid, b'[%s]' % payload,
                     user_properties=dict(page), CorrelationData=b'c')

    wait_until(lambda: node.requester.rejected >= 4, 5,
               'four rejections (have %d)' % node.requester.rejected)
    time.sleep(0.5)
    assert node.requester.rejected == 4
    assert node.transport.rejected_signatures == 4
    assert secondary.last_timestamp() == last
    assert secondary.count_records() == 200
    node.check_writer()
    # one log line per kind, naming the topic
    lines = signature_lines(caplog)
    assert lines == [
        'requester: rejected a message without a valid signature on replicate/archive/weewx '
        '(missing signature)',
        'requester: rejected a message without a valid signature on replicate/archive/weewx '
        '(wrong signature)'], lines
    assert all(r.levelno == logging.WARNING for r in caplog.records
               if REJECTED_TEXT in r.getMessage())

    # Nothing else changed: the next genuine record is stored, and the requester's status
    # counts the rejections.
    publish_live(responder, primary, last + STEP)
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        node.wait_position(last + STEP, timeout=5)
    with secondary.open_manager('wx_binding') as manager:
        assert manager.getRecord(last + STEP)['outTemp'] != 999.0
    watcher = JsonWatcher(rig.client(broker))
    watcher.client.subscribe('replicate/status/weewx/%s' % node.clientid)
    # (a status published before the record was stored may count them too: wait for both)
    status = watcher.wait('replicate/status/weewx/%s' % node.clientid,
                          lambda s: s.get('bindings', {}).get(KEY, {}).get('newest')
                          == last + STEP, timeout=5)
    assert status['rejected'] == 4
    wait_mutual_knowledge(broker, primary, [secondary])
    node.stop()
    figures.assert_clean()
    assert_same(primary, secondary)
    assert responder.counters['rejected'] == 0
    assert error_lines(caplog) == []


def test_responder_refuses_unsigned_requests(rig, broker, caplog, fault_report):
    """Requests without a valid signature (a protocol-1 peer cannot sign at all) get no
    answer, are counted in the responder's counters and its retained status. A requester
    with the secret is served as usual."""
    fault = Fault(fault_report,
                  'unsigned requests (protocol 1 and 2), a request signed with another secret, '
                  'a forged ack, with a shared_secret',
                  'no answer; counted in the counters and the retained status; one log line '
                  'per kind; a requester with the secret still served')
    primary = rig.primary(broker, count=50, shared_secret=SECRET)
    responder = rig.start_responder(primary)
    attacker = rig.client(broker, client_id='attacker')
    attacker.subscribe(ATTACKER_TOPIC)
    common = {'data_binding': KEY, 'node': 'attacker'}
    # protocol 1 (unsigned by nature), protocol 2 unsigned, protocol 2 signed with another
    # secret, a forged ack
    attacker.publish('replicate/request/weewx', b'0', user_properties=common,
                     ResponseTopic=ATTACKER_TOPIC)
    attacker.publish('replicate/request/weewx', b'0', user_properties=dict(common, protocol='2'),
                     ResponseTopic=ATTACKER_TOPIC, CorrelationData=b'x')
    props = list(dict(common, protocol='2').items())
    props.append(('sig', protocol.sign('guess', b'0', b'y', props)))
    attacker.publish('replicate/request/weewx', b'0', user_properties=dict(props),
                     ResponseTopic=ATTACKER_TOPIC, CorrelationData=b'y')
    attacker.publish('replicate/request/weewx',
                     json.dumps({KEY: {'last': START + 49 * STEP, 'count': 50}}).encode(),
                     user_properties=dict(common, protocol='2', op='ack'))
    wait_until(lambda: responder.counters['rejected'] == 4, 5,
               'four rejections (have %d)' % responder.counters['rejected'])
    with pytest.raises(TimeoutError):
        attacker.expect(ATTACKER_TOPIC, timeout=1.0)
    assert responder.transport.rejected_signatures == 4
    assert responder.counters['requests'] == 0 and responder.counters['acks'] == 0
    assert responder.status()['nodes'] == {}
    # the retained status shows the count (and is itself signed)
    watcher = rig.client(broker)
    watcher.subscribe('replicate/status/weewx')
    deadline = time.monotonic() + 5
    while True:
        message = watcher.expect('replicate/status/weewx',
                                 timeout=max(deadline - time.monotonic(), 0.01))
        if json.loads(message.payload)['counters']['rejected'] == 4:
            break
    assert valid(message)
    assert len(signature_lines(caplog)) == 2        # missing, wrong: once each
    assert all(line.startswith('responder: ' + REJECTED_TEXT + 'replicate/request/weewx')
               for line in signature_lines(caplog))
    assert responder.is_alive()

    secondary = rig.secondary(broker, shared_secret=SECRET, page_size=20)
    node = rig.start_requester(secondary)
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        node.wait_caught_up(15)
    wait_mutual_knowledge(broker, primary, [secondary])
    node.stop()
    figures.assert_clean()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_requester_with_another_secret_gets_nothing(rig, broker, caplog):
    primary, secondary = signed_pair(rig, broker, count=100, secondary_secret='other secret')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    # the responder refuses its requests, it refuses the responder's status and live records
    wait_until(lambda: responder.counters['rejected'] >= 1, 10, 'the requests to be refused')
    wait_until(lambda: node.requester.rejected >= 1, 10, 'the responder status to be refused')
    before = node.requester.rejected
    publish_live(responder, primary, START + 100 * STEP)
    wait_until(lambda: node.requester.rejected > before, 5, 'the live record to be refused')
    time.sleep(1.0)
    assert secondary.count_records() == 0
    assert not node.replica.caught_up.is_set()
    assert node.replica.primary_newest is None
    assert responder.counters['requests'] == 0 and responder.status()['nodes'] == {}
    assert responder.counters['rejected'] == responder.transport.rejected_signatures
    assert node.requester.rejected == node.transport.rejected_signatures
    lines = signature_lines(caplog)
    assert any(line.startswith('responder: ' + REJECTED_TEXT + 'replicate/request/weewx')
               for line in lines), lines
    assert any(line.startswith('requester: ' + REJECTED_TEXT + 'replicate/archive/weewx')
               or line.startswith('requester: ' + REJECTED_TEXT + 'replicate/status/weewx')
               for line in lines), lines
    assert node.writer.is_alive() and responder.is_alive()
    node.stop()
    assert error_lines(caplog) == []


def test_secret_on_one_side_only(rig, broker, caplog):
    """A requester without a secret checks nothing (sig is one more property to it: it reads
    the responder's signed status), but the responder refuses its unsigned requests, so it
    gets nothing: both sides need the secret."""
    primary, secondary = signed_pair(rig, broker, count=100, secondary_secret=None)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    assert node.options.connection.shared_secret is None
    wait_until(lambda: responder.counters['rejected'] >= 1, 10, 'the requests to be refused')
    wait_until(lambda: node.replica.primary_newest == START + 99 * STEP, 5,
               'the requester to read the signed status')
    time.sleep(0.5)
    assert secondary.count_records() == 0
    assert node.requester.rejected == 0
    assert any('(missing signature)' in line for line in signature_lines(caplog))
    node.stop()


def test_the_last_will_is_signed(broker, caplog):
    """The broker publishes the will with the user properties given at CONNECT: a vanished
    station's 'offline' is signed like its other messages."""
    from tests.support.mqtt import MqttClient
    conn = cfg.ConnectionOptions(role='requester', clientid='will-signed', host=broker.host,
                                 port=broker.port, shared_secret=SECRET)
    will = ('replicate/status/weewx/will-signed', b'{"state":"offline"}')
    received = []
    transport = Transport(conn, [], received.append, will=will, name='requester')
    with MqttClient(broker) as watcher:
        watcher.subscribe(will[0])
        transport.start()
        try:
            assert transport.wait_connected(10)
            # drop the connection without DISCONNECT: the broker publishes the will
            transport.client.socket().shutdown(socket.SHUT_RDWR)
            message = watcher.expect(will[0], timeout=10)
        finally:
            transport.stop()
    assert message.payload == will[1]
    assert [name for name, _ in message.properties.UserProperty] == ['sig']
    assert valid(message)
    assert retained_json(broker, will[0]) == {'state': 'offline'}
