"""Quiet statuses and the status file (docs/seeing.md): one status per role per archive
interval in steady state, at once on what a reader needs; the file both roles write."""

import json
import time

import pytest

from tests.integration.harness import KEY, START, STEP, add_to_primary, new_record, \
    read_for_live, wait_until
from user.mqttreplicate import messages, protocol, statusfile


pytestmark = pytest.mark.integration


def count_messages(client, seconds):
    """({topic: count}, [messages]) of the messages (not retained) in the next seconds."""
    counts, messages = {}, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            message = client.get(0.1)
        except TimeoutError:
            continue
        if not message.retain:
            counts[message.topic] = counts.get(message.topic, 0) + 1
            messages.append(message)
    return counts, messages


def test_quiet_when_nothing_happens(rig, broker):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    time.sleep(8)                      # the statuses after the catch-up settle
    client = rig.client(broker)
    client.subscribe('replicate/status/#')
    assert count_messages(client, 6)[0] == {}



def read_file(station):
    return statusfile.read(statusfile.status_path(station.config_dict()))


def test_status_file_of_both_roles(rig, broker):
    """Each station's file has its role's key in the documented schema; the primary's shows
    the secondary, live, with its lag and last acknowledgement; a clean stop says offline."""
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker, clientid='filed')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    newest = START + 99 * STEP
    path = statusfile.status_path(secondary.config_dict())
    assert path == str(secondary.root / 'archive' / 'mqttreplicate-status.json')

    def requester_live():
        data = read_file(secondary)
        binding = data and data['requester'] and data['requester']['bindings'].get(KEY)
        return data if binding and binding['state'] == 'live' \
            and binding['verify_result'] == 'in sync' else None
    data = wait_until(requester_live, 20, 'the secondary\'s file to say live, verified')
    assert data['format'] == 1 and data['responder'] is None
    assert set(data['station']) == {'location', 'timezone', 'archive_interval'}
    mine = data['requester']
    assert mine['state'] == 'online' and mine['clientid'] == 'filed'
    assert mine['primary'] == {'state': 'online', 'offline_since': None}
    binding = mine['bindings'][KEY]
    assert binding['newest'] == binding['primary_newest'] == newest
    assert binding['lag'] == 0 and binding['lag_records'] == 0
    assert binding['rejected'] == 0 and binding['repaired_days'] == 0
    assert binding['last_contact'] and binding['verified']
    # the schema of docs/seeing.md, which the report reads
    assert set(mine) == {'state', 'since', 'version', 'clientid', 'last_error', 'primary',
                         'bindings'}
    assert set(binding) == {'state', 'newest', 'primary_newest', 'lag', 'lag_records',
                            'last_contact', 'verified', 'verify_result', 'repaired_days',
                            'repaired_records', 'rejected', 'summaries'}

    def primary_knows():
        data = read_file(primary)
        entry = data and data['responder'] and data['responder']['secondaries'].get('filed')
        return data if entry and entry['bindings'].get(KEY, {}).get('newest') == newest \
            and entry['bindings'][KEY]['verify_result'] == 'in sync' else None
    data = wait_until(primary_knows, 20, 'the primary\'s file to know the secondary')
    assert data['requester'] is None
    theirs = data['responder']
    assert theirs['state'] == 'online' and theirs['bindings'][KEY]['newest'] == newest
    entry = theirs['secondaries']['filed']
    assert entry['state'] == 'live' and entry['offline_since'] is None
    assert set(theirs) == {'state', 'since', 'version', 'clientid', 'last_error', 'bindings',
                           'secondaries'}
    assert set(entry) == {'state', 'offline_since', 'last_contact', 'bindings'}
    assert set(entry['bindings'][KEY]) == {'newest', 'lag', 'lag_records', 'last_ack',
                                           'verified', 'verify_result'}
    assert entry['bindings'][KEY]['lag'] == 0 and entry['bindings'][KEY]['last_ack']

    # a live record: in the file within seconds
    record = new_record(newest + STEP)
    add_to_primary(primary, [record])
    responder.publish_live(responder.bindings[KEY], *read_for_live(primary, newest + STEP))
    wait_until(lambda: read_file(secondary)['requester']['bindings'][KEY]['newest']
               == newest + STEP, 15, 'the live record in the file')

    node.stop()
    assert read_file(secondary)['requester']['state'] == 'offline'
    wait_until(lambda: read_file(primary)['responder']['secondaries']['filed']['state']
               == 'offline', 15, 'the primary to see the secondary offline')
    assert read_file(primary)['responder']['secondaries']['filed']['offline_since']
    rig.stop_responder(responder)
    assert read_file(primary)['responder']['state'] == 'offline'


def steady_records(rig, broker, heartbeat=None, records=3):
    """A caught-up secondary, then `records` live records 9 s apart: per topic the messages
    (not retained) of each record, the acks seen, and the responder."""
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker, clientid='steady')
    if heartbeat is not None:
        for station in (primary, secondary):
            station.edit(lambda config: config['Replicator'].__setitem__(
                'status_heartbeat', str(heartbeat)))
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    client = rig.client(broker)
    client.subscribe('replicate/status/#')
    client.subscribe('replicate/request/#')
    time.sleep(8)
    client.drain()
    ts = START + 99 * STEP
    seen, acks = {}, []
    for _ in range(records):
        ts += STEP
        add_to_primary(primary, [new_record(ts)])
        responder.publish_live(responder.bindings[KEY], *read_for_live(primary, ts))
        counts, messages = count_messages(client, 9)
        acks += [m for m in messages if m.topic == 'replicate/request/weewx']
        for topic, n in counts.items():
            seen.setdefault(topic, []).append(n)
    return seen, acks, responder, ts



def wire_bytes(message):
    """What the broker carries of a message: payload, topic and encoded properties."""
    return len(message.payload) + len(message.topic.encode()) + len(message.properties.pack())


def test_steady_state_is_quiet(rig, broker):
    """Steady state with the default status_heartbeat (10 archive intervals): per live
    record one compact acknowledgement (no data_binding or protocol property) and no status
    of either role; the primary still knows where the secondary is, and the retained
    statuses say live with no lag."""
    seen, acks, responder, ts = steady_records(rig, broker, heartbeat=10)
    assert seen == {'replicate/request/weewx': [1, 1, 1]}, seen
    for ack in acks:
        assert protocol.user_properties(ack.properties) == {'node': 'steady', 'op': 'ack'}
        assert wire_bytes(ack) <= 120, wire_bytes(ack)
    assert responder.nodes['steady'][KEY]['last'] == ts
    client = rig.client(broker)
    client.subscribe('replicate/status/#')
    retained = {}
    while len(retained) < 2:
        message = client.get(5)
        retained[message.topic] = json.loads(message.payload)
    mine = retained['replicate/status/weewx/steady']['bindings'][KEY]
    assert mine['state'] == 'live' and mine['lag'] == 0
    assert retained['replicate/status/weewx']['acks'] == 'compact'
    assert retained['replicate/status/weewx']['nodes']['steady'][KEY]['lag'] == 0


def test_statuses_once_per_record_with_heartbeat_1(rig, broker):
    """status_heartbeat = 1: per live record one acknowledgement and one status of each
    role (the quiet statuses before the heartbeat)."""
    seen, _, _, _ = steady_records(rig, broker, heartbeat=1)
    assert seen == {'replicate/status/weewx': [1, 1, 1],
                    'replicate/status/weewx/steady': [1, 1, 1],
                    'replicate/request/weewx': [1, 1, 1]}, seen


def test_a_relay_writes_both_roles_in_one_file(rig, broker):
    primary = rig.primary(broker, count=50)
    relay = rig.secondary(broker, name='relay', clientid='relay-in')

    def add_responder(config):
        config['Replicator']['Responder'] = {
            'enable': 'true', 'clientid': 'relay-out',
            'relay': {'wx_binding': {'type': 'main'}}}
    relay.edit(add_responder)
    rig.start_responder(primary)
    node = rig.start_requester(relay)
    node.wait_caught_up(15)
    rig.start_responder(relay)         # (it reads its newest records when it connects)

    def both():
        data = read_file(relay)
        return data if data and data['requester'] and data['responder'] \
            and data['requester']['bindings'][KEY]['newest'] == START + 49 * STEP \
            and data['responder']['bindings']['relay/wx_binding']['newest'] \
            == START + 49 * STEP else None
    data = wait_until(both, 20, "the relay's file to have both roles")
    assert data['requester']['clientid'] == 'relay-in'
    assert data['responder']['clientid'] == 'relay-out'


def test_full_and_compact_acks_both_counted(rig, broker):
    """The responder takes the full ack of an older requester and the compact one; a compact
    ack counts only for the bindings of the instance it was published for."""
    primary = rig.primary(broker, count=10)
    # a second instance, so that its request topic is subscribed to
    primary.edit(lambda config: config['Replicator']['Responder'].__setitem__(
        'other', {'wx_binding': {'type': 'secondary'}}))
    responder = rig.start_responder(primary)
    assert 'other/wx_binding' in responder.bindings
    client = rig.client(broker)
    for node, compact in (('older', False), ('newer', True)):
        wire = messages.Ack(None if compact else KEY, node, {KEY: (START, 7)}).encode()
        client.publish('replicate/request/weewx', wire.payload,
                       user_properties=dict(wire.properties))
    wire = messages.Ack(None, 'astray', {KEY: (START, 7)}).encode()
    client.publish('replicate/request/other', wire.payload,
                   user_properties=dict(wire.properties))
    wait_until(lambda: {'older', 'newer'} <= set(responder.nodes), 10, 'both acks')
    assert responder.nodes['older'][KEY]['last'] == responder.nodes['newer'][KEY]['last'] \
        == START
    # (an ack on the other instance naming the binding of weewx: counted nowhere)
    wire = messages.Ack(None, 'astray2', {'other/wx_binding': (START, 7)}).encode()
    client.publish('replicate/request/other', wire.payload,
                   user_properties=dict(wire.properties))
    wait_until(lambda: 'astray2' in responder.nodes, 10, 'the ack on the other instance')
    assert 'astray' not in responder.nodes     # (it came before astray2: same connection)
