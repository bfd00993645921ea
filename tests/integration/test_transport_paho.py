"""transport.Transport against a real broker under whichever paho-mqtt runs the suite: 2.x in
.venv, 1.6.1 (Debian 12's) in scripts/test's second leg. What paho 1.6 and 2.x do differently
is seen here through the transport: connections and subscriptions, refused subscriptions and
messages, disconnects and their reasons, messages acknowledged only by ack(), and a paho that
cannot work refused in one line by the command line."""

import logging
import queue
import socket
import struct
import threading

import pytest

from tests.support.waiting import wait_until
from user.mqttreplicate import config as cfg
from user.mqttreplicate.transport import Transport

pytestmark = pytest.mark.integration

LOGGER = 'user.mqttreplicate.transport'
ACL = ('user primary\n'
       'topic readwrite replicate/#\n'
       'user secondary\n'
       'topic read replicate/archive/#\n')


def _options(broker, clientid, **kwargs):
    return cfg.ConnectionOptions(role='requester', clientid=clientid, host=broker.host,
                                 port=broker.port, min_delay=1, max_delay=2, **kwargs)


def _transport(options, subscriptions, received=None, **kwargs):
    received = queue.Queue() if received is None else received
    return Transport(options, subscriptions, received.put, name=options.clientid,
                     **kwargs), received


def _logged(caplog, text):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and text in r.getMessage()]


def test_connects_subscribes_and_receives_with_properties(rig, broker):
    transport, received = _transport(_options(broker, 'paho-receiver'), ['replicate/#'])
    transport.start()
    try:
        assert transport.wait_subscribed(10), transport.connect_error
        assert transport.client.is_connected()
        rig.client(broker).publish('replicate/archive/weewx', b'42',
                                   user_properties={'protocol': '2'}, CorrelationData=b'id')
        message = received.get(timeout=10)
        assert (message.topic, message.payload) == ('replicate/archive/weewx', b'42')
        assert message.properties.UserProperty == [('protocol', '2')]
        assert message.properties.CorrelationData == b'id'
    finally:
        transport.stop()


def test_a_message_is_acknowledged_only_by_ack(rig, broker):
    """With manual_ack a QoS 1 message the transport did not ack() comes again in the next
    connection of the same session; an acknowledged one does not. (paho 1.6 has no
    manual_ack of its own: it acknowledges as soon as the callback returns.)"""
    options = _options(broker, 'paho-manual-ack')
    first, received = _transport(options, ['replicate/#'], manual_ack=True)
    first.start()
    try:
        assert first.wait_subscribed(10), first.connect_error
        sender = rig.client(broker)
        sender.publish('replicate/archive/weewx', b'stored', qos=1)
        sender.publish('replicate/archive/weewx', b'not stored', qos=1)
        stored, unstored = received.get(timeout=10), received.get(timeout=10)
        assert (stored.payload, unstored.payload) == (b'stored', b'not stored')
        first.ack(stored)
    finally:
        first.stop()
    again, redelivered = _transport(options, ['replicate/#'], manual_ack=True)
    again.start()
    try:
        assert again.wait_connected(10), again.connect_error
        message = redelivered.get(timeout=10)
        assert (message.payload, message.dup) == (b'not stored', True)
        again.ack(message)
        with pytest.raises(queue.Empty):
            redelivered.get(timeout=1)
    finally:
        again.stop()


def test_a_refused_message_is_reported(make_broker, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = make_broker(password=True, acl=ACL)
    options = _options(broker, 'paho-refused', username='secondary', password='secondary-pw')
    transport, _ = _transport(options, [])
    transport.start()
    try:
        assert transport.wait_connected(10), transport.connect_error
        transport.publish('replicate/request/weewx', b'forged', qos=1)
        wait_until(lambda: _logged(caplog, 'refused a message'), 10)
        assert _logged(caplog, 'refused a message') == [
            'paho-refused: the broker refused a message: Not authorized; check its ACL']
    finally:
        transport.stop()


class ScriptedBroker:
    """Just enough of an MQTT v5 broker, on a free loopback port, to say what Mosquitto 2.0
    does not: CONNACK success, a SUBACK of `suback` for every filter, PINGRESP, and on
    disconnect(reason) a DISCONNECT with that reason code and a reason string."""

    def __init__(self, suback):
        self.suback = suback
        self.server = socket.create_server(('127.0.0.1', 0))
        self.host, self.port = self.server.getsockname()
        self.connections = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.put(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _packet(conn):
        """(packet type, body) of the next packet; None at the end of the connection."""
        head = conn.recv(1)
        if not head:
            return None
        length, shift = 0, 0
        while True:
            byte = conn.recv(1)[0]
            length |= (byte & 0x7f) << shift
            shift += 7
            if byte < 0x80:
                break
        body = b''
        while len(body) < length:
            body += conn.recv(length - len(body))
        return head[0] >> 4, body

    def _serve(self, conn):
        with conn:
            try:
                while True:
                    packet = self._packet(conn)
                    if packet is None or packet[0] == 14:              # DISCONNECT
                        return
                    kind, body = packet
                    if kind == 1:                                      # CONNECT
                        conn.sendall(b'\x20\x03\x00\x00\x00')
                    elif kind == 8:                                    # SUBSCRIBE
                        rest, filters = body[3 + body[2]:], 0          # mid, properties
                        while rest:
                            rest = rest[2 + struct.unpack('!H', rest[:2])[0] + 1:]
                            filters += 1
                        conn.sendall(bytes([0x90, 3 + filters]) + body[:2] + b'\x00'
                                     + bytes([self.suback]) * filters)
                    elif kind == 12:                                   # PINGREQ
                        conn.sendall(b'\xd0\x00')
            except OSError:
                return

    def disconnect(self, reason, timeout=10):
        """Send a DISCONNECT with reason code `reason` on the next connection and close it."""
        conn = self.connections.get(timeout=timeout)
        reason_string = b'\x1f\x00\x03bye'                                # property 0x1F
        conn.sendall(bytes([0xe0, 2 + len(reason_string), reason, len(reason_string)])
                     + reason_string)
        conn.close()

    def close(self):
        self.server.close()


@pytest.fixture
def scripted_broker():
    brokers = []

    def factory(suback=1):
        brokers.append(ScriptedBroker(suback))
        return brokers[-1]
    yield factory
    for broker in brokers:
        broker.close()


def test_a_refused_subscription_is_reported(scripted_broker, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = scripted_broker(suback=0x87)                              # Not authorized
    transport, _ = _transport(_options(broker, 'paho-suback'), ['replicate/request/#'])
    transport.start()
    try:
        assert transport.wait_connected(10), transport.connect_error
        wait_until(lambda: _logged(caplog, 'refused a subscription'), 10)
        assert _logged(caplog, 'refused a subscription') == [
            'paho-suback: the broker refused a subscription (Not authorized): check its ACL']
        assert not transport.wait_subscribed(0)
    finally:
        transport.stop()


def test_disconnects_are_reported_with_their_reason(scripted_broker, broker, caplog):
    """A DISCONNECT from the broker names its reason code; a connection that just ends (the
    broker killed) is an "Unspecified error", as paho 2 calls it. The transport reconnects
    after either and subscribes again."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    scripted = scripted_broker()
    transport, _ = _transport(_options(scripted, 'paho-disconnected'), ['replicate/#'])
    transport.start()
    try:
        assert transport.wait_subscribed(10), transport.connect_error
        scripted.disconnect(0x8b)                                      # Server shutting down
        wait_until(lambda: _logged(caplog, 'disconnected from broker'), 10)
        assert _logged(caplog, 'disconnected from broker') == [
            'paho-disconnected: disconnected from broker: Server shutting down']
        assert transport.wait_subscribed(10)                           # connected again
    finally:
        transport.stop()
    other, _ = _transport(_options(broker, 'paho-broker-killed'), [])
    other.start()
    try:
        assert other.wait_connected(10), other.connect_error
        broker.kill()
        # connected is cleared just before the line is logged: wait for the line itself
        wait_until(lambda: len(_logged(caplog, 'disconnected from broker')) > 1, 10)
        assert not other.connected.is_set()
        assert _logged(caplog, 'disconnected from broker')[1:] == [
            'paho-broker-killed: disconnected from broker: Unspecified error']
        broker.start()
        assert other.wait_connected(15), other.connect_error
    finally:
        other.stop()


def test_refused_credentials(make_broker):
    broker = make_broker(password=True)
    options = _options(broker, 'paho-wrong-password', username='secondary', password='wrong')
    transport, _ = _transport(options, [])
    transport.start()
    try:
        wait_until(lambda: transport.refused, 10)
        assert 'refused the connection: Not authorized' in transport.connect_error \
            or 'Bad user name or password' in transport.connect_error
        assert not transport.connected.is_set()
    finally:
        transport.stop()


def test_a_paho_too_old_is_refused_in_one_line(rig, broker, tmp_path):
    """The command line under a paho-mqtt 1.5 (a stand-in first on PYTHONPATH): exit 2 and
    one line naming the version and the fix, no traceback."""
    fake = tmp_path / 'old-paho' / 'paho' / 'mqtt'
    fake.mkdir(parents=True)
    (fake.parent / '__init__.py').write_text('')
    (fake / '__init__.py').write_text('__version__ = "1.5.1"\n')
    (fake / 'client.py').write_text('MQTTv311 = 4\n')
    station = rig.secondary(broker)
    result = station.run_cli('request', '--once', timeout=60,
                             env={'PYTHONPATH': str(tmp_path / 'old-paho')})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: paho-mqtt 1.5.1 is too old: MQTTReplicate needs 1.6 or later (MQTT v5); "
        "install it with 'apt install python3-paho-mqtt' (Debian 12, Raspberry Pi OS "
        "bookworm) or 'pip install paho-mqtt==2.2.0' into WeeWX's Python"]
