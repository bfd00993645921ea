"""The broker ACL of docs/acl.md, run as documented: each requester replicates its own instance
and sees nothing of the other one (neither its live records nor the other requester's answers);
its requests to the other instance never reach the primary; only the primary publishes records,
answers and its status.

The ACL is read from docs/acl.md (between the acl-example markers), so the documentation and
this test cannot drift apart. Users, instances and client ids are the documentation's."""

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.harness import (BINDING, KEY, START, STEP, add_binding, add_to_primary,
                                       assert_same, configure, error_lines, new_record,
                                       read_for_live, wait_until)
from tests.support.mqtt import user_properties
from tests.support.station import compare_databases, seed_history
from user.mqttreplicate import database

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'acl.md'
BEGIN = '<!-- acl-example:begin -->'
END = '<!-- acl-example:end -->'

# as in docs/acl.md
USERS = {'primary': 'primary-secret', 'station1': 'station1-secret',
         'station2': 'station2-secret'}
GARDEN = 'garden'
GARDEN_BINDING = 'garden_binding'
GARDEN_KEY = '%s/%s' % (GARDEN, GARDEN_BINDING)

WEEWX_COUNT = 600
GARDEN_COUNT = 400
NOT_AUTHORIZED = 135          # PUBACK reason code of a publish the ACL denies


def documented_acl():
    """The acl_file text of docs/acl.md: the fenced block between the markers."""
    text = DOC.read_text(encoding='utf-8')
    assert text.count(BEGIN) == 1 and text.count(END) == 1, 'markers missing in %s' % DOC
    lines = text.split(BEGIN)[1].split(END)[0].strip().splitlines()
    assert lines[0].startswith('```') and lines[-1] == '```', 'no fenced block between markers'
    return '\n'.join(lines[1:-1]) + '\n'


def allowed_for_station1(topic):
    """What the ACL lets user station1 read."""
    parts = topic.split('/')
    return topic in ('replicate/archive/weewx', 'replicate/status/weewx',
                     'replicate/response/station1') \
        or (len(parts) == 4 and parts[:2] == ['replicate', 'status'] and parts[3] == 'station1')


def live_of(station, binding, ts):
    """(record, prev) of ts in a binding, as the responder reads them for a live record."""
    with station.open_manager(binding) as manager:
        record = manager.getRecord(ts)
        prev = database.previous_timestamp(manager, ts)
    return {k: v for k, v in record.items() if v is not None}, prev


def request_props(key, node='station1', limit=5):
    return {'data_binding': key, 'protocol': '2', 'node': node, 'op': 'records',
            'limit': limit}


def published(client, topic, payload, **kwargs):
    """PUBACK reason code (int) of a QoS 1 publish."""
    info = client.publish(topic, payload, **kwargs)
    return int(client.puback_codes[info.mid].value)


def answers(messages, correlation):
    return [m for m in list(messages)
            if getattr(m.properties, 'CorrelationData', None) == correlation]


def test_documented_acl_confines_each_requester(rig, make_broker, caplog):
    broker = make_broker(users=USERS, acl=documented_acl())

    # The primary: instance weewx (wx_binding) and instance garden (garden_binding).
    primary = rig.station('primary')
    add_binding(primary, GARDEN_BINDING, 'garden.sdb')
    seed_history(primary, START, WEEWX_COUNT)
    seed_history(primary, START - 30, GARDEN_COUNT, binding=GARDEN_BINDING)
    configure(primary, broker, 'Responder', user='primary', clientid='primary-responder',
              batch_size=100)
    primary.edit(lambda c: c['Replicator']['Responder'].__setitem__(
        GARDEN, {GARDEN_BINDING: {'type': 'secondary'}}))

    # station1 follows weewx, station2 follows garden (into its own wx_binding).
    station1 = configure(rig.station('station1'), broker, 'Requester', user='station1',
                         clientid='station1', page_size=200)
    station2 = configure(rig.station('station2'), broker, 'Requester', user='station2',
                         clientid='station2', page_size=150, instance=GARDEN)

    def garden_requester(config):
        config['Replicator']['Requester'][GARDEN] = {
            GARDEN_BINDING: {'type': 'main', 'secondary_data_binding': BINDING}}
    station2.edit(garden_requester)

    # Eavesdroppers, before anything runs: one with station1's credentials (another client
    # id), one with station2's, which proves that station2's traffic flows.
    spy1 = rig.client(broker, username='station1', password=USERS['station1'],
                      client_id='station1-spy')
    for topic in ('#', 'replicate/archive/garden', 'replicate/response/station2',
                  'replicate/status/garden', 'replicate/status/garden/station2'):
        spy1.subscribe(topic)
    spy2 = rig.client(broker, username='station2', password=USERS['station2'],
                      client_id='station2-spy')
    spy2.subscribe('replicate/archive/garden')
    spy2.subscribe('replicate/response/station2')

    responder = rig.start_responder(primary)
    assert sorted(responder.bindings) == [GARDEN_KEY, KEY]
    node1 = rig.start_requester(station1)
    node2 = rig.start_requester(station2)
    assert node1.clientid == 'station1' and node2.clientid == 'station2'
    node1.wait_caught_up(15)
    node2.wait_caught_up(15)
    node1.wait_verified()           # its own requests done before we count the control's
    node2.wait_verified()

    # One live record in each instance.
    ts = START + WEEWX_COUNT * STEP
    add_to_primary(primary, [new_record(ts)])
    garden_ts = START - 30 + GARDEN_COUNT * STEP
    with primary.open_manager(GARDEN_BINDING) as manager:
        manager.addRecord(new_record(garden_ts), log_success=False)
    responder.publish_live(responder.bindings[GARDEN_KEY], *live_of(primary, GARDEN_BINDING,
                                                                    garden_ts))
    responder.publish_live(responder.bindings[KEY], *read_for_live(primary, ts))
    node1.wait_position(ts, 5)
    garden_replica = node2.requester.replicas[GARDEN_KEY]
    wait_until(lambda: garden_replica.position == garden_ts and node2.idle(), 5,
               'station2 to store the garden live record')
    assert set(node1.requester.replicas) == {KEY}
    assert node1.requester.rejected == 0 and node2.requester.rejected == 0

    # station2's answers and live records flowed, and station2's own user could read them ...
    seen2 = spy2.drain(0.3)
    assert any(m.topic == 'replicate/response/station2' for m in seen2)
    assert any(m.topic == 'replicate/archive/garden' for m in seen2)
    # ... station1's could not.
    seen1 = spy1.drain(0.3)
    assert any(m.topic == 'replicate/archive/weewx' for m in seen1)
    assert any(m.topic == 'replicate/response/station1' for m in seen1)
    assert [m.topic for m in seen1 if not allowed_for_station1(m.topic)] == []
    assert not any(user_properties(m).get('data_binding', '').startswith(GARDEN)
                   for m in seen1)

    # station2 leaves; somebody with station1's password takes its client id.
    node2.stop()
    impostor = rig.client(broker, username='station1', password=USERS['station1'],
                          client_id='station2')
    impostor.subscribe('replicate/response/station2')
    spy2.drain(0.1)
    requests_before = responder.counters['requests']

    # station1 may not ask the garden instance: the broker refuses, the primary never sees it.
    denied = uuid.uuid4().bytes
    assert published(spy1, 'replicate/request/garden', b'0',
                     user_properties=request_props(GARDEN_KEY),
                     ResponseTopic='replicate/response/station1',
                     CorrelationData=denied) == NOT_AUTHORIZED
    # Its own instance answers it (the control) ...
    allowed = uuid.uuid4().bytes
    assert published(spy1, 'replicate/request/weewx', str(ts - 5 * STEP).encode(),
                     user_properties=request_props(KEY),
                     ResponseTopic='replicate/response/station1',
                     CorrelationData=allowed) == 0
    # ... and answers sent to station2's response topic at station1's request reach only
    # station2's user, not station1's password under station2's client id.
    redirected = uuid.uuid4().bytes
    assert published(spy1, 'replicate/request/weewx', str(ts - 5 * STEP).encode(),
                     user_properties=request_props(KEY),
                     ResponseTopic='replicate/response/station2',
                     CorrelationData=redirected) == 0

    # Only the primary publishes records, answers and its status.
    forged = {k: v for k, v in new_record(ts + STEP).items() if v is not None}
    forged['outTemp'] = 999.0
    payload = json.dumps(forged).encode('utf-8')
    assert published(spy1, 'replicate/archive/weewx', payload,
                     user_properties={'data_binding': KEY, 'protocol': '2',
                                      'prev': ts}) == NOT_AUTHORIZED
    assert published(spy1, 'replicate/response/station2', b'[]',
                     user_properties={'data_binding': GARDEN_KEY, 'protocol': '2', 'seq': 0,
                                      'count': 0, 'end': 1, 'more': 0}) == NOT_AUTHORIZED
    for topic in ('replicate/status/weewx', 'replicate/status/garden',
                  'replicate/status/garden/station2'):
        assert published(spy1, topic, b'{"state": "offline"}', retain=True) \
            == NOT_AUTHORIZED, topic
    # station1 may publish its own status
    assert published(spy1, 'replicate/status/weewx/station1', b'{"state": "online"}') == 0

    wait_until(lambda: answers(spy1.messages.queue, allowed), 5, 'the answer to station1')
    wait_until(lambda: answers(spy2.messages.queue, redirected), 5,
               'the answer on station2\'s topic')
    time.sleep(0.5)
    seen1 = spy1.drain(0.2)
    assert answers(seen1, denied) == [] and answers(seen1, redirected) == []
    assert [m.topic for m in seen1 if not allowed_for_station1(m.topic)] == []
    assert impostor.drain(0.1) == []
    assert responder.counters['requests'] - requests_before == 2
    assert node1.replica.position == ts        # the forged live record never arrived

    node1.stop()
    assert_same(primary, station1)
    diffs = compare_databases(primary, GARDEN_BINDING, station2, BINDING)
    assert diffs == [], '\n'.join(diffs)
    assert station2.count_records() == GARDEN_COUNT + 1
    assert error_lines(caplog) == []
    assert responder.counters['rejected'] == 0
    # the stations themselves never asked for anything the ACL denies
    log = broker.log_text()
    for clientid in ('station1', 'station2', 'primary-responder'):
        assert 'Denied PUBLISH from %s (' % clientid not in log, clientid
