"""Bridged brokers (issue 11, item 1): the primary's responder on the station's broker, the
secondaries on an internet broker, joined by the Mosquitto MQTT v5 bridge of
docs/topologies.md. The bridge configuration is read from the page (tests/support/bridge.py),
with only its address and CA file replaced, so the page shows what runs here.

What crosses the bridge: the MQTT v5 properties the protocol lives on (user properties in
order, CorrelationData, ResponseTopic, message expiry), retained statuses both ways, and
nothing in the wrong direction; then a whole replication: a signed catch-up with the link
cut in the middle and restored, live records published while the link is down, the
requester's own verification and a repair by `verify --repair`, acknowledgements and both
statuses on both brokers; and each broker restarted in the middle of a catch-up. Every
replication ends with the databases equal row by row (archive and daily summaries).

Found with Mosquitto 2.0.11: its v5 bridge opens its session on the internet broker with no
session expiry, so the session ends when the link drops: what is published on the internet
broker while the link is down (requests, acks) is lost, whatever `cleansession false` says.
What goes out (answers, live records, the primary's status) is kept on the station's side
and delivered when the link is back. The requester asks again after its page_timeout.
"""

import sqlite3

import pytest

from tests.integration.harness import (BINDING, KEY, START, STEP, assert_same,
                                       error_lines, live_record, publish_live, wait_until)
from tests.support.bridge import (SECONDARY_USER, BridgedBrokers, bridge_options,
                                   documented_bridge)
from tests.support.mqtt import MqttClient, publish_properties
from tests.support.mutual import wait_mutual_knowledge

pytestmark = pytest.mark.integration

TOTAL = 864                  # three days of 5-minute records
SECRET = 'bridge-test-secret'
DAY = 86400


@pytest.fixture
def bridged(make_broker):
    """The documented bridge between two private brokers (see tests/support/bridge.py)."""
    pair = BridgedBrokers(make_broker)
    yield pair
    pair.stop()


# ------------------------------------------------------------------------------------------------
# the bridge itself
# ------------------------------------------------------------------------------------------------

def test_the_documented_bridge():
    """The page's bridge speaks MQTT v5 with a persistent session and QoS 1 on every topic of
    the protocol, in the directions the protocol needs."""
    options = bridge_options(documented_bridge())
    assert options['bridge_protocol_version'] == 'mqttv50'
    assert options['cleansession'] == 'false'
    assert options['local_clientid'] and options['remote_clientid']
    assert options['local_clientid'] != options['remote_clientid']
    assert sorted(options['topic']) == sorted([
        'replicate/request/# in 1', 'replicate/response/# out 1', 'replicate/archive/# out 1',
        'replicate/status/+ out 1', 'replicate/status/+/+ in 1'])


def test_v5_properties_and_retained_statuses_cross_the_bridge(bridged):
    """A request published on the internet broker reaches the station's broker with its
    payload, its user properties (in order, a repeated name included: signatures cover them
    in order), CorrelationData, ResponseTopic and message expiry; answers, live records and
    the primary's status go the other way; retained statuses are retained on both brokers;
    nothing crosses in the direction the bridge does not carry."""
    login = bridged.secondary_login()
    station = MqttClient(bridged.station)
    internet = MqttClient(bridged.internet, **login)
    try:
        station.subscribe('replicate/#')
        internet.subscribe('replicate/#')
        props = [('data_binding', KEY), ('protocol', '2'), ('node', 'secondary-x'),
                 ('op', 'records'), ('limit', '50'), ('x', 'first'), ('x', 'second'),
                 ('sig', '0123abcd')]
        correlation = b'\x00\xffcorrelation\x00'
        request = publish_properties(None, ResponseTopic='replicate/response/secondary-x',
                                     CorrelationData=correlation, MessageExpiryInterval=120)
        request.UserProperty = props
        internet.publish('replicate/request/weewx', b'1700000000', properties=request)
        got = station.expect('replicate/request/weewx', 10)
        assert got.payload == b'1700000000'
        assert list(got.properties.UserProperty) == props
        assert got.properties.CorrelationData == correlation
        assert got.properties.ResponseTopic == 'replicate/response/secondary-x'
        assert 0 < got.properties.MessageExpiryInterval <= 120

        answer = publish_properties(None, CorrelationData=correlation)
        answer.UserProperty = [('data_binding', KEY), ('protocol', '2'), ('seq', '0'),
                               ('count', '0'), ('end', '1'), ('more', '0')]
        station.publish('replicate/response/secondary-x', b'[]', properties=answer)
        got = internet.expect('replicate/response/secondary-x', 10)
        assert got.payload == b'[]' and got.properties.CorrelationData == correlation
        assert list(got.properties.UserProperty) == list(answer.UserProperty)

        station.publish('replicate/archive/weewx', b'{"dateTime": 1}',
                        user_properties={'data_binding': KEY, 'protocol': '2', 'prev': '0'})
        got = internet.expect('replicate/archive/weewx', 10)
        assert dict(got.properties.UserProperty)['prev'] == '0'

        station.publish('replicate/status/weewx', b'{"state": "online"}', retain=True)
        internet.publish('replicate/status/weewx/secondary-x', b'{"state": "online"}',
                         retain=True)
        internet.expect('replicate/status/weewx', 10)
        station.expect('replicate/status/weewx/secondary-x', 10)

        # the wrong way: nothing crosses (each broker hands its own publications to its own
        # subscriber, and only those)
        wrong = b'the wrong way'
        station.publish('replicate/request/weewx', wrong)
        station.publish('replicate/status/weewx/secondary-y', wrong)
        internet.publish('replicate/archive/weewx', wrong)
        internet.publish('replicate/response/secondary-x', wrong)
        internet.publish('replicate/status/weewx', wrong)
        assert sorted(m.topic for m in station.drain(0.5) if m.payload == wrong) == [
            'replicate/request/weewx', 'replicate/status/weewx/secondary-y']
        assert sorted(m.topic for m in internet.drain(0.2) if m.payload == wrong) == [
            'replicate/archive/weewx', 'replicate/response/secondary-x',
            'replicate/status/weewx']
    finally:
        station.disconnect()
        internet.disconnect()

    # retained on both sides: a fresh subscriber on each broker gets both statuses
    for broker, options in ((bridged.station, {}), (bridged.internet, login)):
        with MqttClient(broker, **options) as fresh:
            fresh.subscribe('replicate/status/#')
            seen = {m.topic: (m.retain, m.payload) for m in fresh.drain(0.5)}
        assert seen['replicate/status/weewx/secondary-x'] == (True, b'{"state": "online"}')
        assert seen['replicate/status/weewx'] == (True, b'{"state": "online"}')


# ------------------------------------------------------------------------------------------------
# replication across the bridge
# ------------------------------------------------------------------------------------------------

def through_the_bridge(rig, bridged, **options):
    """A primary with TOTAL records on the station's broker, a secondary on the internet broker
    (TLS, the documented user), both with `options`."""
    primary = rig.primary(bridged.station, count=TOTAL, batch_size=25, **options)
    secondary = rig.secondary(bridged.internet, tls=True, user=SECONDARY_USER, page_size=50,
                              page_timeout=3, **options)
    return primary, secondary


def wait_both_sides_know(bridged, primary, secondary):
    """Mutual knowledge on both brokers: each side's status, carried over the bridge, shows
    what the other has."""
    wait_mutual_knowledge(bridged.internet, primary, [secondary], **bridged.secondary_login())
    wait_mutual_knowledge(bridged.station, primary, [secondary])


def test_signed_replication_with_the_link_cut_in_the_middle_of_the_catch_up(
        rig, bridged, caplog):
    primary, secondary = through_the_bridge(rig, bridged, shared_secret=SECRET)
    responder = rig.start_responder(primary)
    watcher = rig.client(bridged.internet, **bridged.secondary_login())
    watcher.subscribe('replicate/archive/weewx')

    # The link goes down about a third into the catch-up's answers (173 KB in all) ...
    bridged.cut_after(60000)
    node = rig.start_requester(secondary)
    wait_until(lambda: not bridged.proxy.armed, 20, 'the link to go down')
    at_cut = node.requester.progress_count
    assert at_cut < TOTAL, 'the catch-up ended before the link went down'

    # ... while it is down the primary goes on: its live records wait on the station's side
    live = [START + (TOTAL + i) * STEP for i in range(3)]
    for ts in live:
        publish_live(responder, primary, ts)
    assert not node.caught_up()
    assert node.requester.progress_count < TOTAL + len(live)

    bridged.restore()
    # what went out while the link was down was kept on the station's side
    # (the responder also publishes its newest record when it connects: the seeded one)
    arrived = []
    while not set(live) <= set(arrived):
        arrived.append(live_record(watcher.expect('replicate/archive/weewx', 10))['dateTime'])
    assert arrived[-len(live):] == live
    node.wait_caught_up(30)
    node.wait_position(live[-1])
    node.wait_verified()                  # the requester's own digest, through the bridge
    assert node.replica.verifier.verified

    # live records with the link up
    more = [live[-1] + STEP, live[-1] + 2 * STEP]
    for ts in more:
        publish_live(responder, primary, ts)
    node.wait_position(more[-1])

    wait_both_sides_know(bridged, primary, secondary)
    assert responder.counters['acks'] >= 1
    assert responder.counters['rejected'] == 0 and node.requester.rejected == 0
    assert_same(primary, secondary)
    assert secondary.count_records() == TOTAL + len(live) + len(more)

    # verify and repair through the bridge (the command line, as a user runs it)
    node.stop()
    altered = START + DAY + 600
    con = sqlite3.connect(str(secondary.db_path(BINDING)))
    with con:
        con.execute('UPDATE archive SET outTemp = outTemp + 1 WHERE dateTime = ?', (altered,))
        con.execute('DELETE FROM archive WHERE dateTime = ?', (altered + STEP,))
    con.close()
    repaired = secondary.run_cli('--connect-timeout', '10', 'verify', '--days', '10',
                                 '--repair', timeout=120)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert 'differs' in repaired.stdout and 'repaired' in repaired.stdout, repaired.stdout
    assert_same(primary, secondary)
    assert responder.counters['rejected'] == 0
    assert error_lines(caplog) == []


def test_either_broker_restarted_in_the_middle_of_a_catch_up(rig, bridged, caplog):
    """The link slowed down so that the catch-up takes seconds: the station's broker is
    restarted a sixth of the way in (the responder and the bridge reconnect to it), the
    internet broker half-way (the requester and the bridge reconnect to it); then live
    records. Both brokers keep their state on disk, as an installed Mosquitto does."""
    primary, secondary = through_the_bridge(rig, bridged)
    responder = rig.start_responder(primary)
    bridged.proxy.throttle(40000)          # 173 KB of answers: at least 4 s
    node = rig.start_requester(secondary)

    wait_until(lambda: node.requester.progress_count >= TOTAL // 6, 30, 'the first pages')
    bridged.restart_station()
    assert node.requester.progress_count < TOTAL, 'the catch-up ended before the restart'
    assert responder.transport.wait_connected(15), 'the responder did not reconnect'

    wait_until(lambda: node.requester.progress_count >= TOTAL // 2, 30, 'half the records')
    bridged.restart_internet()
    assert node.requester.progress_count < TOTAL, 'the catch-up ended before the restart'
    node.wait_connected(15)

    bridged.proxy.throttle(None)
    node.wait_caught_up(30)
    live = [START + (TOTAL + i) * STEP for i in range(3)]
    for ts in live:
        publish_live(responder, primary, ts)
    node.wait_position(live[-1])
    wait_both_sides_know(bridged, primary, secondary)
    node.stop()
    assert node.replica.stored == TOTAL + len(live)
    assert secondary.count_records() == TOTAL + len(live)
    assert_same(primary, secondary)
    assert error_lines(caplog) == []
