"""Hostile input (SPEC 2.6, 5.7): a malformed, oversized, forged or hostile message is
rejected with one log line and a counter, and changes nothing else. Each case ends with a
secondary equal to the primary and mutual knowledge (each side's status shows what the other
has), and reports its figures to the fault table of docs/reliability.md."""

import json
import logging
import time
import zlib

import pytest

from tests.integration.harness import (KEY, START, STEP, add_to_primary, assert_same,
                                       error_lines, new_record, read_for_live, wait_until)
from tests.support.measure import Fault, in_process
from tests.support.mqtt import MqttClient, user_properties
from tests.support.mutual import wait_mutual_knowledge

pytestmark = pytest.mark.integration

ATTACKER_TOPIC = 'replicate/response/attacker'


def settle_and_compare(fault, broker, primary, secondary, caplog, node, wait):
    """The end of every case: wait() for the secondary to settle (measured and reported as
    the fault's row), mutual knowledge, the secondary stopped and equal to the primary."""
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        wait()
    wait_mutual_knowledge(broker, primary, [secondary])
    node.stop()
    figures.assert_clean()
    assert_same(primary, secondary)


def still_serves(fault, rig, broker, primary, caplog):
    """After the attack, a real requester still catches up with the responder."""
    secondary = rig.secondary(broker, page_size=40)
    node = rig.start_requester(secondary)
    settle_and_compare(fault, broker, primary, secondary, caplog, node,
                       lambda: node.wait_caught_up(15))


# ------------------------------------------------------------------------------------------------
# the responder
# ------------------------------------------------------------------------------------------------

def request(client, payload=b'0', response_topic=ATTACKER_TOPIC, binding=KEY, protocol='2',
            correlation=b'c', **props):
    user = {'data_binding': binding, 'node': 'attacker'}
    if protocol is not None:
        user['protocol'] = protocol
    user.update({k: str(v) for k, v in props.items()})
    fields = {'CorrelationData': correlation}
    if response_topic is not None:
        fields['ResponseTopic'] = response_topic
    client.publish('replicate/request/weewx', payload, user_properties=user, **fields)


def answers(client, correlation, timeout=5.0):
    """The messages of one page answered to the attacker, up to the one with end=1."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        message = client.expect(ATTACKER_TOPIC, timeout=max(deadline - time.monotonic(), 0.01))
        if getattr(message.properties, 'CorrelationData', None) != correlation:
            continue
        out.append(message)
        if user_properties(message).get('end') == '1':
            return out


def is_live_record(message):
    """The responder's own live record (it publishes its newest one when it connects)."""
    props = user_properties(message)
    return message.topic == 'replicate/archive/weewx' and props.get('protocol') == '2' \
        and 'prev' in props and getattr(message.properties, 'CorrelationData', None) is None


def test_hostile_requests(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'requests with a response topic outside the response prefix, a malformed '
                  '`since`, a zero limit, an unknown operation, unknown bindings, a huge limit',
                  'one log line and a counter each; nothing published outside the prefix; the '
                  'limit capped at page_size; a real requester still served')
    primary = rig.primary(broker, count=120, page_size=50, batch_size=20)
    responder = rig.start_responder(primary)
    spy = rig.client(broker)
    spy.subscribe('#')
    attacker = rig.client(broker, client_id='attacker')
    attacker.subscribe(ATTACKER_TOPIC)

    # Answers may only go under the response prefix, whatever the request says.
    for topic, protocol in (('replicate/archive/weewx', '2'), ('other/topic', None),
                            ('replicate/response', '2'), ('replicate/response/', '2'),
                            ('replicate/responses/x', '2'), (None, '2')):
        request(attacker, response_topic=topic, protocol=protocol)
    wait_until(lambda: responder.counters['rejected'] == 6, 5, 'six rejections')
    time.sleep(0.5)
    leaked = [m.topic for m in spy.drain(0.3)
              if not m.topic.startswith(('replicate/request/', 'replicate/status/'))
              and not is_live_record(m)]
    assert leaked == []
    assert any(r.levelno == logging.WARNING and 'response topic' in r.getMessage()
               for r in caplog.records)

    # Malformed since, a zero limit and an unknown operation: rejected, no answer.
    request(attacker, b'abc', correlation=b'bad-since')
    request(attacker, b'0', correlation=b'zero-limit', limit=0)
    request(attacker, b'0', correlation=b'bad-op', op='frobnicate')
    wait_until(lambda: responder.counters['rejected'] == 9, 5, 'three more rejections')

    # Unknown bindings: an empty page that says why.
    for correlation, binding in ((b'unknown', 'weewx/nope'), (b'other', 'other/wx_binding')):
        request(attacker, correlation=correlation, binding=binding)
        (reply,) = answers(attacker, correlation)
        props = user_properties(reply)
        assert props['count'] == '0' and props['end'] == '1' and props['more'] == '0'
        assert 'unknown binding' in props['error']
        assert reply.payload == b'[]'

    # A huge limit is capped at the responder's page_size.
    request(attacker, correlation=b'huge', limit=10 ** 9)
    page = answers(attacker, b'huge')
    records = [r for m in page for r in json.loads(
        zlib.decompress(m.payload) if user_properties(m)['encoding'] == 'zlib+json'
        else m.payload)]
    assert len(records) == 50
    assert user_properties(page[-1])['more'] == '1'
    assert user_properties(page[-1])['last'] == str(START + 49 * STEP)
    assert all(int(user_properties(m)['count']) <= 20 for m in page)
    assert not [m for m in attacker.drain(0.3) if getattr(m.properties, 'CorrelationData', None)
                in (b'bad-since', b'zero-limit', b'bad-op')]

    # And the responder still serves a real requester.
    assert responder.is_alive()
    still_serves(fault, rig, broker, primary, caplog)
    assert responder.counters['rejected'] == 9
    assert error_lines(caplog) == []


def test_hostile_requests_beyond_validation(rig, broker, caplog, fault_report):
    """Requests whose payload breaks the parser or the database rather than the rules (a
    deeply nested ack, since = 1e400, since beyond SQLite's integers): rejected and counted,
    no error-level line. (Found by this suite; fixed in ecc7ed4.)"""
    fault = Fault(fault_report,
                  'requests that break the parser or the database: a 100,000-deep nested ack, '
                  '`since` = 1e400, `since` beyond SQLite\'s integers',
                  'rejected and counted, no error line; a real requester still served')
    primary = rig.primary(broker, count=20)
    responder = rig.start_responder(primary)
    attacker = rig.client(broker, client_id='attacker')
    attacker.subscribe(ATTACKER_TOPIC)
    request(attacker, b'[' * 100000 + b']' * 100000, op='ack')      # RecursionError
    request(attacker, b'1e400', correlation=b'inf')                  # OverflowError
    request(attacker, b'1' + b'0' * 25, correlation=b'big')          # too big for SQLite
    # until the three are handled: rejected (or, wrongly, answered or failed)
    wait_until(lambda: responder.counters['rejected'] + responder.counters['pages'] >= 3
               or error_lines(caplog), 30, 'the three requests to be handled',
               describe=lambda: 'counters: %s' % responder.counters)
    assert error_lines(caplog) == []
    assert responder.counters['rejected'] == 3
    still_serves(fault, rig, broker, primary, caplog)
    assert error_lines(caplog) == []


def ack(client, node, acks, wait=True):
    client.publish('replicate/request/weewx', json.dumps(acks).encode('utf-8'),
                   user_properties={'data_binding': KEY, 'protocol': '2', 'node': node,
                                    'op': 'ack'}, wait=wait)


def test_forged_ack_values_are_rejected(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'forged acks: a 100,000-character count, a boolean `last`',
                  'rejected and counted; the status holds integers only; a real requester '
                  'still served and acknowledged')
    primary = rig.primary(broker, count=20)
    responder = rig.start_responder(primary)
    attacker = rig.client(broker)
    ack(attacker, 'big', {KEY: {'last': START, 'count': 'x' * 100000}})
    ack(attacker, 'bool', {KEY: {'last': True, 'count': 1}})
    wait_until(lambda: responder.counters['acks'] + responder.counters['rejected'] >= 2, 5,
               'the acks')
    nodes = responder.status()['nodes']
    assert responder.counters['rejected'] == 2, nodes
    for node in nodes.values():
        for entry in node.values():
            assert type(entry['last']) is int and type(entry['count']) is int
    still_serves(fault, rig, broker, primary, caplog)


def test_acks_of_many_nodes_keep_the_status_bounded(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  'acks of 3,000 forged node names',
                  'the status stays within max_message_bytes and 1,000 nodes; a real '
                  'requester still served and acknowledged')
    primary = rig.primary(broker, count=20)
    responder = rig.start_responder(primary)
    attacker = rig.client(broker)
    for n in range(3000):
        ack(attacker, 'forged-node-%04d' % n, {KEY: {'last': START, 'count': 1}}, wait=False)
    wait_until(lambda: responder.counters['acks'] + responder.counters['rejected'] >= 3000, 10,
               'the acks')
    # the status published after the last of them (the newest node is kept, the oldest go)
    last = 'forged-node-%04d' % 2999
    with MqttClient(broker) as reader:
        reader.subscribe('replicate/status/weewx')
        deadline = time.monotonic() + 15
        while True:
            status = reader.expect('replicate/status/weewx',
                                   timeout=max(deadline - time.monotonic(), 0.01))
            if last in (json.loads(status.payload).get('nodes') or {}):
                break
    assert len(status.payload) <= responder.conn.max_message_bytes
    assert len(responder.nodes) <= 1000
    still_serves(fault, rig, broker, primary, caplog)


# ------------------------------------------------------------------------------------------------
# the requester
# ------------------------------------------------------------------------------------------------

def live(client, payload, encoding=None, binding=KEY, prev=None, topic='replicate/archive/weewx',
         **props):
    user = {'data_binding': binding, 'protocol': '2'}
    if prev is not None:
        user['prev'] = str(prev)
    if encoding is not None:
        user['encoding'] = encoding
    user.update({k: str(v) for k, v in props.items()})
    client.publish(topic, payload, user_properties=user)


def caught_up_secondary(rig, broker, count=200):
    primary = rig.primary(broker, count=count)
    secondary = rig.secondary(broker, page_size=100)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    return primary, secondary, responder, node, START + (count - 1) * STEP


def good_record_after(primary, responder, node, ts):
    add_to_primary(primary, [new_record(ts)])
    record, prev, days = read_for_live(primary, ts)
    responder.publish_live(responder.bindings[KEY], record, prev, days)
    node.wait_position(ts, timeout=5)


def test_hostile_records(rig, broker, caplog, fault_report):
    fault = Fault(fault_report,
                  '24 malformed, oversized, zip-bomb (64 MiB), forged and out-of-range live '
                  'records, and a forged page whose count does not match',
                  'one rejection each; nothing stored; the next good record is stored')
    primary, secondary, responder, node, last = caught_up_secondary(rig, broker)
    ts = last + STEP

    def rec(**fields):
        record = {'dateTime': ts, 'usUnits': 1, 'interval': 5, 'outTemp': 50.0}
        record.update(fields)
        return json.dumps({k: v for k, v in record.items() if v is not ...}).encode('utf-8')

    bomb = zlib.compress(b'[' + b' ' * (64 * 1024 * 1024) + b']', 9)
    assert len(bomb) < 256 * 1024
    hostile = [
        dict(payload=b'{"dateTime": '),                                  # not JSON
        dict(payload=b'[1, 2]'),                                         # not records
        dict(payload=b'"just a string"'),
        dict(payload=rec(dateTime='%d' % ts)),                           # wrong type
        dict(payload=rec(dateTime=ts + 0.5)),
        dict(payload=rec(dateTime=-5)),
        dict(payload=rec(usUnits=...)),                                  # missing usUnits
        dict(payload=rec(usUnits=99)),
        dict(payload=rec(usUnits=True)),
        dict(payload=rec(interval=0)),
        dict(payload=rec(interval=...)),
        dict(payload=bomb, encoding='zlib+json'),                        # zip bomb
        dict(payload=b'not zlib at all', encoding='zlib+json'),
        dict(payload=rec(), encoding='gzip'),                            # unknown encoding
        dict(payload=rec(outTemp='hot')),                                # string value
        dict(payload=rec(outTemp=True)),
        dict(payload=rec(outTemp=[1])),
        dict(payload=rec().replace(b'50.0', b'NaN')),
        dict(payload=rec(dateTime=int(time.time()) + 3 * 86400)),        # far future
        dict(payload=b'[%s, %s]' % (rec(), rec(dateTime=ts + STEP))),    # two live records
        dict(payload=rec(**{'out;Temp': 1.0})),                          # not a column name
        dict(payload=rec(**{'x' * 100: 1.0})),
        dict(payload=rec(), prev='abc'),                                 # bad property
        dict(payload=rec(), seq='-1'),
    ]
    attacker = rig.client(broker)
    for message in hostile:
        live(attacker, **message)
    # a forged page on the response topic whose count does not match its records
    live(attacker, b'[%s]' % rec(), topic='replicate/response/%s' % node.clientid,
         count=5, seq=0, end=1, more=0)
    expected = len(hostile) + 1
    wait_until(lambda: node.requester.rejected >= expected, 10,
               '%d rejections (have %d)' % (expected, node.requester.rejected))
    time.sleep(0.3)
    assert node.requester.rejected == expected
    node.check_writer()
    assert secondary.last_timestamp() == last
    assert any(r.levelno == logging.WARNING and 'rejected a message' in r.getMessage()
               for r in caplog.records)

    # The requester keeps working: the next good record is stored.
    settle_and_compare(fault, broker, primary, secondary, caplog, node,
                       lambda: good_record_after(primary, responder, node, ts))
    assert error_lines(caplog) == []


def test_integer_too_big_for_sqlite_is_rejected(rig, broker, caplog, fault_report):
    """2**63 is a valid JSON number but no SQLite integer: it used to pass validation and the
    insert's OverflowError killed the writer thread. (Found by this suite; fixed in
    ecc7ed4.)"""
    fault = Fault(fault_report,
                  'a live record holding an integer too big for SQLite (2**63)',
                  'rejected; the writer thread survives; the next good record is stored')
    primary, secondary, responder, node, last = caught_up_secondary(rig, broker, count=50)
    attacker = rig.client(broker)
    live(attacker, b'{"dateTime": %d, "usUnits": 1, "interval": 5, "outTemp": %d}'
         % (last + STEP, 2 ** 63), prev=last)
    wait_until(lambda: node.requester.rejected == 1 or not node.writer.is_alive(), 5,
               'the record to be rejected')
    node.check_writer()
    assert node.requester.rejected == 1
    settle_and_compare(fault, broker, primary, secondary, caplog, node,
                       lambda: good_record_after(primary, responder, node, last + STEP))
    assert error_lines(caplog) == []


def test_undecodable_messages_do_not_stall_the_requester(rig, broker, caplog, fault_report):
    """Payloads whose decoding raised something other than ProtocolError (OverflowError from a
    huge interval, RecursionError from deep nesting) used to be left un-acknowledged: past
    the broker's 20 in-flight messages nothing reached the requester any more. They must be
    rejected, acknowledged, and the next record stored. (Found by this suite; fixed in
    ecc7ed4 by making the decoder raise ProtocolError.)"""
    fault = Fault(fault_report,
                  "22 undecodable live records (an overflowing interval, 100,000-deep nesting), "
                  "more than the broker's in-flight window",
                  'each rejected and acknowledged; the next good record is stored')
    primary, secondary, responder, node, last = caught_up_secondary(rig, broker, count=50)
    attacker = rig.client(broker)
    overflow = b'{"dateTime": %d, "usUnits": 1, "interval": 1%s}' % (last + STEP, b'0' * 400)
    nested = b'[' * 100000 + b']' * 100000
    for _ in range(11):                       # more than the broker's 20 in-flight messages
        live(attacker, overflow, prev=last)
        live(attacker, nested, prev=last)
    # (stalled, it never gets past 20, however long it is given)
    wait_until(lambda: node.requester.rejected == 22, 20, '22 rejections (have %d)'
               % node.requester.rejected)
    settle_and_compare(fault, broker, primary, secondary, caplog, node,
                       lambda: good_record_after(primary, responder, node, last + STEP))
    assert error_lines(caplog) == []
