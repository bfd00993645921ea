"""Another MQTT v5 broker than Mosquitto: ejabberd's mod_mqtt (Debian's package ejabberd).

One private ejabberd for the module (tests/support/ejabberd.py: its own config, spool and log,
a free loopback port, no epmd, started and stopped by PID), running the ejabberd.yml of
docs/topologies.md ("Other brokers", between the ejabberd-example markers) with the users the
page names. A representative part of the suite runs through it: a catch-up of several pages,
live records and a hole, the requester's own verification and the verify command, a requester
stopped and started again (what was queued in its session while it was away), acks and
retained statuses, a last will, shared_secret signing, and an ejabberd restart during a
catch-up. Each test ends with the two databases equal row by row."""

import json
from pathlib import Path

import pytest

from tests.integration.harness import (KEY, START, STEP, RequesterNode, add_to_primary,
                                       assert_same, error_lines, new_record, publish_live,
                                       wait_until)
from tests.support.conversation import Conversation, records
from tests.support.ejabberd import Ejabberd
from tests.support.mqtt import MqttClient, user_properties
from tests.support.mutual import wait_mutual_knowledge
from tests.support.proxy import TcpProxy

from user.mqttreplicate import protocol

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'topologies.md'
BEGIN = '<!-- ejabberd-example:begin -->'
END = '<!-- ejabberd-example:end -->'

# the users of docs/topologies.md's ejabberd.yml (its acl "stations")
USERS = {'primary': 'primary-secret', 'secondary1': 'secondary1-secret'}
SECRET = 'a shared secret, for ejabberd too'
STATUS = 'replicate/status/weewx'


def documented_config():
    """The ejabberd.yml of docs/topologies.md: the fenced block between the markers."""
    text = DOC.read_text(encoding='utf-8')
    assert text.count(BEGIN) == 1 and text.count(END) == 1, 'markers missing in %s' % DOC
    lines = text.split(BEGIN)[1].split(END)[0].strip().splitlines()
    assert lines[0] == '```yaml' and lines[-1] == '```', 'no fenced block between markers'
    return '\n'.join(lines[1:-1]) + '\n'


@pytest.fixture(scope='module')
def ejabberd(tmp_path_factory):
    """The private ejabberd, started once for this module."""
    server = Ejabberd(tmp_path_factory.mktemp('ejabberd'), config=documented_config(),
                      users=USERS)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_retained(ejabberd):
    """Each test starts without the retained statuses of the ones before (the server is
    shared): every retained message under replicate/ is cleared (an empty retained one)."""
    with MqttClient(ejabberd, **ejabberd.credentials('primary')) as client:
        client.subscribe('replicate/#')
        topics = set()
        while True:
            try:
                message = client.get(0.3)
            except TimeoutError:
                break
            if message.retain and message.payload:
                topics.add(message.topic)
        for topic in sorted(topics):
            client.publish(topic, b'', retain=True)
    yield


class Via:
    """Stands in for the broker in rig.secondary: the station connects through a proxy,
    with the credentials of a user of ejabberd."""

    def __init__(self, proxy, server):
        self.proxy = proxy
        self.server = server

    def connection_options(self, tls=False, user=None):
        options = self.server.connection_options(user=user)
        options.update(host=self.proxy.host, port=self.proxy.port)
        return options


def pair(rig, server, count, primary_options=None, **secondary_options):
    primary = rig.primary(server, count=count, user='primary', **(primary_options or {}))
    secondary_options.setdefault('page_size', 200)
    secondary = rig.secondary(secondary_options.pop('via', server), user='secondary1',
                              **secondary_options)
    return primary, secondary


def retained(rig, server, topic, timeout=5.0):
    """The retained message on topic, as JSON, read by a fresh subscriber."""
    client = rig.client(server, **server.credentials('primary'))
    try:
        client.subscribe(topic)
        message = client.expect(topic, timeout=timeout)
        assert message.retain, 'message on %s is not retained' % topic
        return json.loads(message.payload.decode('utf-8'))
    finally:
        client.disconnect()


def signed(message, secret=SECRET):
    try:
        protocol.check_signature(secret, message.payload,
                                 getattr(message.properties, 'CorrelationData', None),
                                 getattr(message.properties, 'UserProperty', None) or ())
        return True
    except protocol.SignatureError:
        return False


def connections(caplog, role='requester'):
    return [r.getMessage() for r in caplog.records if r.name == 'user.mqttreplicate.transport'
            and r.getMessage().startswith('%s: connected to' % role)]


# ------------------------------------------------------------------------------------------------

def test_catchup_live_records_and_verification(rig, ejabberd, caplog):
    """1,200 records in pages of 100 sent as batches of 25, the requester's own verification,
    live records in order and after a hole, and the verify command: in sync."""
    count = 1200
    last = START + (count - 1) * STEP
    primary, secondary = pair(rig, ejabberd, count,
                              dict(batch_size=25, page_size=1000), page_size=100)
    monitor = rig.client(ejabberd, **ejabberd.credentials('primary'))
    monitor.subscribe('replicate/request/#')
    monitor.subscribe('replicate/response/#')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    assert node.requester.progress_count == count
    assert secondary.count_records() == count

    # pulled page by page, each answer's properties as they were sent
    talk = Conversation.collect(monitor, Conversation.catchup_done)
    requests = talk.catchup_requests()
    assert len(requests) >= 12
    assert all(r.properties.ResponseTopic == 'replicate/response/%s' % node.clientid
               for r in requests)
    for request in requests:
        page = talk.answers(request)
        props = [user_properties(m) for m in page]
        assert [int(p['seq']) for p in props] == list(range(len(page)))
        assert all(p['data_binding'] == KEY and p['protocol'] == '2' for p in props)
        assert all(int(p['count']) == len(records(m)) for p, m in zip(props, page))
    assert talk.end(requests[-1])['more'] == '0'
    node.wait_verified()
    assert node.replica.verifier.verified

    # live records: in order, then one after a hole (its prev is newer than what is stored)
    for i in (1, 2):
        publish_live(responder, primary, last + i * STEP)
        node.wait_position(last + i * STEP, timeout=5)
    add_to_primary(primary, [new_record(last + i * STEP) for i in (3, 4, 5)])
    publish_live(responder, primary, last + 6 * STEP)
    node.wait_position(last + 6 * STEP, timeout=10)
    assert any('hole before live record' in r.getMessage() for r in caplog.records)
    assert secondary.count_records() == count + 6
    node.stop()
    assert_same(primary, secondary)

    result = secondary.run_cli('--connect-timeout', '10', 'verify', '--all', timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'in sync' in result.stdout and 'differs' not in result.stdout
    assert error_lines(caplog) == []


def test_requester_restarted_gets_what_its_session_queued(rig, ejabberd, caplog):
    """The requester stops (a clean DISCONNECT: ejabberd keeps its session); five live
    records are published meanwhile; started again with the same client id, it finds its
    session and ejabberd delivers the five from it."""
    count = 300
    last = START + (count - 1) * STEP
    primary, secondary = pair(rig, ejabberd, count, dict(batch_size=100))
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    node.stop()

    for i in range(1, 6):
        publish_live(responder, primary, last + i * STEP)

    again = RequesterNode(secondary.config_dict())
    assert again.clientid == node.clientid
    live_topics = []
    on_live = again.requester._on_live

    def spy(envelope, replica):          # the live records this run receives
        live_topics.append(envelope.topic)
        on_live(envelope, replica)
    again.requester._on_live = spy
    rig.nodes.append(again)
    again.start()
    again.wait_connected()
    again.wait_position(last + 5 * STEP, timeout=15)
    assert connections(caplog)[-1].endswith('(session present: True)')
    assert live_topics == ['replicate/archive/weewx'] * 5
    wait_mutual_knowledge(ejabberd, primary, [secondary])
    again.stop()
    assert secondary.count_records() == count + 5
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_signed_acks_statuses_and_last_will(rig, ejabberd, caplog):
    """With a shared_secret on both sides: everything either side publishes is signed and
    arrives signed (ejabberd passes user properties and CorrelationData through, those of a
    will too); acks reach the responder's retained status, each side's status shows what the
    other has; a connection cut (no DISCONNECT) makes ejabberd publish the requester's will,
    retained and signed; clean stops leave "offline" retained."""
    count = 400
    last = START + (count - 1) * STEP
    proxy = TcpProxy(ejabberd.host, ejabberd.port)
    try:
        primary, secondary = pair(rig, ejabberd, count,
                                  dict(batch_size=100, shared_secret=SECRET),
                                  via=Via(proxy, ejabberd), shared_secret=SECRET)
        spy = rig.client(ejabberd, **ejabberd.credentials('primary'))
        spy.subscribe('replicate/#')
        responder = rig.start_responder(primary)
        node = rig.start_requester(secondary)
        node.wait_caught_up(20)
        for i in (1, 2, 3):
            publish_live(responder, primary, last + i * STEP)
            node.wait_position(last + i * STEP, timeout=5)
        newest = last + 3 * STEP
        wait_mutual_knowledge(ejabberd, primary, [secondary])
        status = retained(rig, ejabberd, STATUS)
        ack = status['nodes'][node.clientid][KEY]
        assert ack['last'] == newest and ack['lag'] == 0
        mine = '%s/%s' % (STATUS, node.clientid)
        assert retained(rig, ejabberd, mine)['bindings'][KEY]['acknowledged'] == newest

        # the connection cut: ejabberd publishes the will; the requester comes back
        proxy.cut()
        wait_until(lambda: retained(rig, ejabberd, mine)['state'] == 'offline', 10,
                   "the requester's will")
        node.wait_connected(15)
        wait_mutual_knowledge(ejabberd, primary, [secondary])

        node.stop()
        assert retained(rig, ejabberd, mine)['state'] == 'offline'
        rig.stop_responder(responder)
        assert retained(rig, ejabberd, STATUS)['state'] == 'offline'
    finally:
        proxy.stop()

    messages = []
    while True:
        try:
            messages.append(spy.get(0.5))
        except TimeoutError:
            break
    kinds = {(m.topic.rsplit('/', 1)[0], user_properties(m).get('op', '-')) for m in messages}
    assert {('replicate/request', 'records'), ('replicate/request', 'ack'),
            ('replicate/response', '-'), ('replicate/archive', '-'),
            ('replicate/status', '-'), ('replicate/status/weewx', '-')} <= kinds, kinds
    assert [(m.topic, user_properties(m)) for m in messages if not signed(m)] == []
    offline = [m for m in messages if m.topic == mine
               and json.loads(m.payload).get('state') == 'offline']
    assert len(offline) >= 2                     # the will and the final status
    assert node.requester.rejected == 0 and node.transport.rejected_signatures == 0
    assert responder.transport.rejected_signatures == 0
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_ejabberd_restarted_during_a_catchup(rig, ejabberd, caplog):
    """ejabberd restarts (it keeps its sessions in memory: both sides reconnect to new
    sessions) in the middle of a 1,500-record catch-up: the requester asks again, nothing is
    lost, nothing stored twice."""
    count = 1500
    primary, secondary = pair(rig, ejabberd, count, dict(batch_size=50, page_size=150),
                              page_size=150)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    wait_until(lambda: node.requester.progress_count >= 300, 30, 'the first pages')
    before = len(connections(caplog))
    ejabberd.restart()
    at_restart = node.requester.progress_count
    node.wait_caught_up(60)
    assert at_restart < count, 'the catch-up ended before ejabberd restarted'
    again = connections(caplog)[before:]
    assert again and all(c.endswith('(session present: False)') for c in again), again
    assert node.requester.progress_count == count
    with secondary.open_manager() as manager:
        rows = list(manager.genSql('SELECT COUNT(*), COUNT(DISTINCT dateTime) FROM archive'))
    assert rows[0][0] == rows[0][1] == count
    wait_mutual_knowledge(ejabberd, primary, [secondary])
    node.stop()
    assert_same(primary, secondary)
    assert responder.transport.wait_connected(1)
    # the broker went away: one warning line per side, nothing at error level
    assert error_lines(caplog) == []
