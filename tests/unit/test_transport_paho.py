"""transport's paho-mqtt compatibility without a broker: which paho is refused and how, and
(under paho 1.6 only, scripts/test's second leg) Client16, which gives transport paho 2's
callbacks, PUBACK reason codes and manual acknowledgements."""

import re
import ssl
import struct
from pathlib import Path

import pytest
import weewx.engine

from user.mqttreplicate import config, transport
from user.mqttreplicate.driver import MQTTRequesterDriver

TOO_OLD = ("paho-mqtt 1.5.1 is too old: MQTTReplicate needs 1.6 or later (MQTT v5); install "
           "it with 'apt install python3-paho-mqtt' (Debian 12, Raspberry Pi OS bookworm) or "
           "'pip install paho-mqtt==2.2.0' into WeeWX's Python")
paho16_only = pytest.mark.skipif(not transport.is_paho1(),
                                 reason='paho-mqtt 1.6 only (scripts/test --paho16)')


def _options():
    return config.ConnectionOptions(role='requester', clientid='unit-paho', host='broker.invalid')


def test_only_transport_imports_paho():
    """The package and the tests' support modules reach paho through transport only."""
    root = Path(__file__).resolve().parents[2]
    sources = list((root / 'bin' / 'user' / 'mqttreplicate').glob('*.py')) \
        + list((root / 'tests' / 'support').glob('*.py'))
    importing = sorted(str(path.relative_to(root)) for path in sources
                       if re.search(r'^\s*(import|from)\s+paho\b', path.read_text(), re.M))
    assert importing == ['bin/user/mqttreplicate/transport.py']


def test_the_installed_paho_is_usable():
    assert transport.paho_version() >= (1, 6)
    assert transport.paho_problem() is None
    client = transport.new_client('unit-paho', manual_ack=True)
    assert isinstance(client, transport.Client16) == transport.is_paho1()


@pytest.mark.parametrize('version', [(1, 5, 1), (1, 4, 0), (0, 4, 94)])
def test_a_paho_too_old_is_refused_in_one_sentence(monkeypatch, version):
    monkeypatch.setattr(transport, 'paho_version', lambda: version)
    with pytest.raises(transport.PahoError) as refused:
        transport.Transport(_options(), [], lambda message: None)
    text = str(refused.value)
    assert text == TOO_OLD.replace('1.5.1', '.'.join(map(str, version)))
    assert isinstance(refused.value, config.ConfigError)     # the CLI: one line, exit 2


def test_no_paho_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(transport, 'paho', None)
    assert transport.paho_problem() == (
        "paho-mqtt is not installed: MQTTReplicate needs 1.6 or later; install it with "
        "'apt install python3-paho-mqtt' (Debian 12, Raspberry Pi OS bookworm) or "
        "'pip install paho-mqtt==2.2.0' into WeeWX's Python")


def test_the_driver_refuses_a_paho_too_old_before_anything_else(monkeypatch):
    monkeypatch.setattr(transport, 'paho_version', lambda: (1, 5, 1))
    with pytest.raises(weewx.engine.InitializationError) as refused:
        MQTTRequesterDriver({}, None)
    assert str(refused.value) == 'MQTTReplicate: ' + TOO_OLD


def test_reason_codes_have_what_transport_reads():
    refused = transport.reason_code('SUBACK', 0x87)
    assert (refused.value, refused.is_failure, str(refused)) == (0x87, True, 'Not authorized')
    granted = transport.reason_code('SUBACK', 1)
    assert (granted.value, granted.is_failure, str(granted)) == (1, False, 'Granted QoS 1')
    assert transport.reason_code('SUBACK', refused) == refused


def test_properties_and_topic_matches():
    props = transport.properties('PUBLISH', UserProperty=[('a', '1')], CorrelationData=b'x')
    assert (props.UserProperty, props.CorrelationData) == ([('a', '1')], b'x')
    assert transport.topic_matches('replicate/+/weewx', 'replicate/archive/weewx')
    assert not transport.topic_matches('replicate/#', 'other/archive')


# --- paho 1.6: Client16 -------------------------------------------------------------------------

def _calls(client, name):
    """Set client.<name> to a recorder; return (recorder's calls, the function paho calls)."""
    calls = []
    setattr(client, name, lambda *args: calls.append(args))
    return calls, getattr(client, name)


@paho16_only
def test_paho16_on_connect_gets_flags_and_a_reason_code():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCodes
    client = transport.new_client('unit-paho')
    calls, called_by_paho = _calls(client, 'on_connect')
    called_by_paho(client, None, {'session present': 1},
                   ReasonCodes(PacketTypes.CONNACK, identifier=0), None)
    called_by_paho(client, None, {'session present': 0},
                   ReasonCodes(PacketTypes.CONNACK, identifier=135), None)
    called_by_paho(client, None, {'session present': 0}, 132, None)    # 1.6's CONNACK of 1
    (_, _, flags, ok, _), (_, _, _, refused, _), (_, _, _, old, _) = calls
    assert flags.session_present is True and not ok.is_failure
    assert refused.is_failure and str(refused) == 'Not authorized'
    assert old.is_failure and str(old) == 'Unsupported protocol version'


@paho16_only
def test_paho16_on_disconnect_gets_a_reason_code_for_paho_errors():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCodes
    client = transport.new_client('unit-paho')
    calls, called_by_paho = _calls(client, 'on_disconnect')
    called_by_paho(client, None, transport.mqtt.MQTT_ERR_CONN_LOST)
    called_by_paho(client, None, transport.mqtt.MQTT_ERR_KEEPALIVE)
    called_by_paho(client, None, transport.mqtt.MQTT_ERR_SUCCESS)
    called_by_paho(client, None, ReasonCodes(PacketTypes.DISCONNECT, identifier=0x8e), None)
    seen = [(flags.is_disconnect_packet_from_server, str(code), code.is_failure)
            for _, _, flags, code, _ in calls]
    assert seen == [(False, 'Unspecified error', True), (False, 'Keep alive timeout', True),
                    (False, 'Normal disconnection', False), (True, 'Session taken over', True)]


@paho16_only
def test_paho16_on_subscribe_and_on_publish_get_reason_codes():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCodes
    client = transport.new_client('unit-paho')
    subscribed, called_by_paho = _calls(client, 'on_subscribe')
    called_by_paho(client, None, 7, [ReasonCodes(PacketTypes.SUBACK, identifier=1),
                                     ReasonCodes(PacketTypes.SUBACK, identifier=0x87)], None)
    assert [code.is_failure for code in subscribed[0][3]] == [False, True]
    published, called_by_paho = _calls(client, 'on_publish')
    # a PUBACK of mid 9 with reason code 135: 1.6 reads it, then calls on_publish(mid)
    client._in_packet = {'packet': struct.pack('!HBB', 9, 135, 0), 'remaining_length': 4}
    client._handle_pubackcomp('PUBACK')
    called_by_paho(client, None, 9)
    called_by_paho(client, None, 10)                  # QoS 0: no PUBACK, success
    assert [(mid, str(code)) for _, _, mid, code, _ in published] == [
        (9, 'Not authorized'), (10, 'Success')]
    assert client.publish_reasons == {}


@paho16_only
def test_paho16_manual_ack_sends_acknowledgements_only_from_ack(monkeypatch):
    client = transport.new_client('unit-paho', manual_ack=True)
    sent = []
    monkeypatch.setattr(client, '_send_command_with_mid',
                        lambda command, mid, dup: sent.append((command, mid)))
    client._send_puback(3)                            # what 1.6 does after on_message
    client._send_pubcomp(4)                           # and on a QoS 2 message's PUBREL
    assert sent == []
    client.ack(3, 1)
    client.ack(4, 2)
    client.ack(5, 0)
    assert sent == [(transport.mqtt.PUBACK, 3), (transport.mqtt.PUBCOMP, 4)]
    automatic = transport.new_client('unit-paho-auto')
    monkeypatch.setattr(automatic, '_send_command_with_mid',
                        lambda command, mid, dup: sent.append((command, mid)))
    automatic._send_puback(6)
    automatic.ack(6, 1)                               # without manual_ack: nothing more
    assert sent[2:] == [(transport.mqtt.PUBACK, 6)]


@paho16_only
def test_paho16_transport_gets_a_client16_with_manual_ack():
    t = transport.Transport(_options(), [], lambda message: None, manual_ack=True)
    assert isinstance(t.client, transport.Client16) and t.client.manual_ack


@paho16_only
def test_paho16_a_tls_error_is_a_lost_connection_not_the_end_of_the_loop():
    """1.6 lets any OSError but a ConnectionError out of its loop thread (a TLS alert on a
    read ended it); as under 2.x it is a lost connection, reconnected."""
    class FailingSocket:
        def recv(self, bufsize):
            raise ssl.SSLError(1, 'tlsv13 alert certificate required')

        def send(self, buf):
            raise ssl.SSLError(1, 'bad record mac')

        def close(self):
            pass
    client = transport.new_client('unit-paho')
    client._sock = FailingSocket()
    assert client._packet_read() == transport.mqtt.MQTT_ERR_CONN_LOST
    client._sock = FailingSocket()
    client._out_packet.append({'command': 0xc0, 'mid': 0, 'qos': 0, 'pos': 0,
                               'to_process': 2, 'packet': b'\xc0\x00', 'info': None})
    assert client._packet_write() == transport.mqtt.MQTT_ERR_CONN_LOST
