"""The private Mosquitto fixtures work with a paho-mqtt 2 / MQTT v5 client."""

import ssl
import subprocess

import pytest

from tests.support.broker import Broker, make_certs, port_open
from tests.support.mqtt import ConnectRefused, MqttClient, user_properties

pytestmark = pytest.mark.integration


def roundtrip(client, topic='test/roundtrip', payload=b'hello'):
    client.subscribe(topic)
    client.publish(topic, payload, qos=1, user_properties={'protocol': '2'})
    msg = client.expect(topic, timeout=5)
    assert msg.payload == payload
    assert user_properties(msg) == {'protocol': '2'}
    return msg


def test_plain_roundtrip(broker):
    assert broker.host == '127.0.0.1'
    assert broker.port not in (0, 1883) and broker.tls_port is None
    with MqttClient(broker) as client:
        roundtrip(client)
    assert 'mosquitto version' in broker.log_text()


def test_password_broker(password_broker):
    b = password_broker
    assert set(b.users) == {'primary', 'secondary'}
    with MqttClient(b, username='primary', password=b.users['primary']) as client:
        roundtrip(client)
    with pytest.raises(ConnectRefused) as err:
        MqttClient(b, username='primary', password='wrong')
    assert err.value.reason_code.is_failure
    with pytest.raises(ConnectRefused):
        MqttClient(b)                                  # anonymous refused


def test_password_file_without_mosquitto_passwd(make_broker):
    """The Python fallback writes hashes that Mosquitto accepts."""
    b = make_broker(users={'alice': 's3cret'}, use_passwd_tool=False)
    assert b.password_file.read_text().startswith('alice:$7$101$')
    with MqttClient(b, username='alice', password='s3cret') as client:
        roundtrip(client)
    with pytest.raises(ConnectRefused):
        MqttClient(b, username='alice', password='nope')


def test_tls_broker(tls_broker, tmp_path):
    b = tls_broker
    assert b.tls_port and b.tls_port != b.port
    with MqttClient(b, tls=True, ca_certs=b.ca_certs) as client:
        roundtrip(client)
    # The plain listener is still there.
    with MqttClient(b) as client:
        roundtrip(client)
    # A client that trusts another CA refuses the server's certificate.
    other = make_certs(tmp_path / 'other-ca')
    with pytest.raises(ssl.SSLError):
        MqttClient(b, tls=True, ca_certs=str(other.ca_cert))
    # The server certificate names IP:127.0.0.1 and DNS:localhost.
    text = subprocess.run(['openssl', 'x509', '-noout', '-text', '-in',
                           str(b.certs.server_cert)], capture_output=True, text=True).stdout
    assert 'IP Address:127.0.0.1' in text and 'DNS:localhost' in text


def test_tls_require_certificate(make_broker):
    b = make_broker(tls=True, require_certificate=True, password=True)
    with MqttClient(b, tls=True, certfile=b.client_cert, keyfile=b.client_key,
                    username='secondary', password='secondary-pw') as client:
        roundtrip(client)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, TimeoutError)):
        c = MqttClient(b, tls=True, username='secondary', password='secondary-pw', timeout=3)
        roundtrip(c)                   # TLS 1.3 may report the missing cert only after connect


def test_acl(make_broker):
    acl = ('user primary\n'
           'topic readwrite replicate/#\n'
           'user secondary\n'
           'topic read replicate/archive/#\n')
    b = make_broker(password=True, acl=acl)
    with MqttClient(b, username='secondary', password='secondary-pw') as sec, \
            MqttClient(b, username='primary', password='primary-pw') as pri:
        sec.subscribe('replicate/#')
        pri.publish('replicate/archive/weewx', b'rec')
        assert sec.expect('replicate/archive/weewx', timeout=5).payload == b'rec'
        info = sec.publish('replicate/archive/weewx', b'forged')       # denied by the ACL
        assert sec.puback_codes[info.mid].value == 135                 # Not authorized
        pri.publish('replicate/request/weewx', b'0')            # not readable by secondary
        assert [m.payload for m in sec.drain(0.5)] == []


def test_restart_keeps_port(broker):
    port = broker.port
    broker.restart()
    assert broker.port == port and broker.running
    with MqttClient(broker) as client:
        roundtrip(client)
    broker.kill()
    assert not broker.running and not port_open(broker.host, port)
    broker.start()
    assert broker.port == port
    with MqttClient(broker) as client:
        roundtrip(client)
    broker.stop()
    assert not broker.running


def test_persistence_keeps_retained_and_sessions(persistent_broker):
    b = persistent_broker
    with MqttClient(b, client_id='sub-1', clean_start=False, session_expiry=3600) as sub:
        sub.subscribe('queued/#')
    with MqttClient(b) as pub:
        pub.publish('status/weewx', b'{"state": "online"}', retain=True)
        pub.publish('queued/x', b'while-away')
    b.restart()
    with MqttClient(b) as client:
        client.subscribe('status/#')
        assert client.expect('status/weewx', timeout=5).payload == b'{"state": "online"}'
    with MqttClient(b, client_id='sub-1', clean_start=False, session_expiry=3600) as sub:
        assert sub.session_present
        assert sub.expect('queued/x', timeout=5).payload == b'while-away'


def test_without_persistence_restart_forgets(broker):
    with MqttClient(broker) as pub:
        pub.publish('status/weewx', b'x', retain=True)
    broker.restart()
    with MqttClient(broker) as client:
        client.subscribe('status/#')
        assert client.drain(0.3) == []


def test_pause_resume(broker):
    with MqttClient(broker) as client:
        client.subscribe('t')
        broker.pause()
        client.publish('t', b'1', wait=False)
        assert client.drain(0.3) == []
        broker.resume()
        assert client.expect('t', timeout=5).payload == b'1'


def test_brokers_are_private(tmp_path):
    with Broker(tmp_path / 'a') as a, Broker(tmp_path / 'b') as b:
        assert a.port != b.port
        with MqttClient(a) as ca, MqttClient(b) as cb:
            cb.subscribe('x')
            ca.publish('x', b'1')
            assert cb.drain(0.3) == []
    assert not a.running and not b.running
