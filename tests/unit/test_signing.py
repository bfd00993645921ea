"""Unit tests of signed messages (SPEC 5.7): protocol.sign / check_signature and the
transport that signs everything it sends and checks everything it receives.

No broker: the transport is built but never started; its paho client's publish and ack are
replaced by recorders, and received messages are real paho MQTTMessage objects.
"""

import hashlib
import hmac
import logging
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from user.mqttreplicate import config as cfg
from user.mqttreplicate import protocol, transport
from user.mqttreplicate.protocol import SignatureError, check_signature, sign

SECRET = 'correct horse battery staple'
PAYLOAD = b'{"dateTime":1700000000,"usUnits":1,"interval":5,"outTemp":12.5}'
CORRELATION = b'0123456789abcdef'
PROPS = [('data_binding', 'weewx/wx_binding'), ('protocol', '2'), ('seq', '0'),
         ('count', '1')]


def signed(props=PROPS, payload=PAYLOAD, correlation=CORRELATION, secret=SECRET):
    return list(props) + [('sig', sign(secret, payload, correlation, props))]


def kind_of(payload, correlation, props, secret=SECRET):
    """None if the signature is valid, else the SignatureError kind."""
    try:
        check_signature(secret, payload, correlation, props)
    except SignatureError as e:
        return e.kind
    return None


# ---------------------------------------------------------------------------------------------
#  The canonical form
# ---------------------------------------------------------------------------------------------

def part(data):
    return struct.pack('>I', len(data)) + data


def test_canonical_form_is_length_prefixed_parts_in_order():
    form = protocol.canonical_form(b'42', b'cd', [('a', 'x'), ('sig', 'ignored'),
                                                  ('bc', 'yz')])
    assert form == (part(b'MQTTReplicate-sig-1') + part(b'42') + part(b'cd')
                    + part(b'a') + part(b'x') + part(b'bc') + part(b'yz'))


def test_signature_is_hex_hmac_sha256_of_the_canonical_form():
    expected = hmac.new(SECRET.encode('utf-8'),
                        protocol.canonical_form(PAYLOAD, CORRELATION, PROPS),
                        hashlib.sha256).hexdigest()
    assert sign(SECRET, PAYLOAD, CORRELATION, PROPS) == expected
    assert len(expected) == 64 and expected == expected.lower()
    assert sign(SECRET.encode('utf-8'), PAYLOAD, CORRELATION, PROPS) == expected


def test_no_correlation_is_an_empty_one_and_str_is_utf8():
    assert sign(SECRET, PAYLOAD, None, PROPS) == sign(SECRET, PAYLOAD, b'', PROPS)
    assert sign(SECRET, 'température', None, []) == sign(SECRET, 'température'.encode('utf-8'),
                                                          None, ())
    assert sign(SECRET, None, None, None) == sign(SECRET, b'', b'', [])


def test_unicode_properties_are_signed_as_utf8():
    props = [('data_binding', 'météo/wx_binding')]
    check_signature(SECRET, PAYLOAD, None, signed(props, correlation=None))


@pytest.mark.parametrize('a, b', [
    # moving bytes from one part to the next must change the signed bytes
    ((b'ab', b'c', []), (b'a', b'bc', [])),
    ((b'', b'x', []), (b'x', b'', [])),
    ((b'', b'', [('ab', 'c')]), (b'', b'', [('a', 'bc')])),
    ((b'', b'', [('a', 'b'), ('c', 'd')]), (b'', b'', [('a', 'bc'), ('', 'd')])),
    ((b'', b'', [('a', '')]), (b'', b'', [('', 'a')])),
    ((b'', b'', [('', '')]), (b'', b'', [])),
    ((b'x', b'', [('a', 'b')]), (b'x' + part(b'a') + part(b'b'), b'', [])),
])
def test_different_messages_have_different_canonical_forms(a, b):
    assert protocol.canonical_form(*a) != protocol.canonical_form(*b)
    assert sign(SECRET, *a) != sign(SECRET, *b)


# ---------------------------------------------------------------------------------------------
#  Checking
# ---------------------------------------------------------------------------------------------

def test_a_signed_message_checks():
    assert kind_of(PAYLOAD, CORRELATION, signed()) is None


def test_the_signature_may_travel_anywhere_among_the_properties():
    props = signed()
    moved = [props[-1]] + props[:-1]
    assert kind_of(PAYLOAD, CORRELATION, moved) is None
    moved = props[:2] + [props[-1]] + props[2:-1]
    assert kind_of(PAYLOAD, CORRELATION, moved) is None


def test_missing_signature():
    assert kind_of(PAYLOAD, CORRELATION, PROPS) == 'missing'
    assert kind_of(PAYLOAD, CORRELATION, []) == 'missing'
    assert kind_of(PAYLOAD, CORRELATION, None) == 'missing'


def test_other_secret():
    assert kind_of(PAYLOAD, CORRELATION, signed(secret='other')) == 'wrong'
    assert kind_of(PAYLOAD, CORRELATION, signed(), secret=SECRET + ' ') == 'wrong'


@pytest.mark.parametrize('payload', [PAYLOAD.replace(b'12.5', b'99.5'), PAYLOAD + b' ',
                                     PAYLOAD[:-1], b''])
def test_tampered_payload(payload):
    assert kind_of(payload, CORRELATION, signed()) == 'wrong'


@pytest.mark.parametrize('correlation', [b'0123456789abcdeF', CORRELATION + b'0', b'', None])
def test_tampered_correlation(correlation):
    assert kind_of(PAYLOAD, correlation, signed()) == 'wrong'


def test_correlation_added_to_a_message_signed_without_one():
    props = signed(correlation=None)
    assert kind_of(PAYLOAD, None, props) is None
    assert kind_of(PAYLOAD, b'', props) is None          # empty is the same as none
    assert kind_of(PAYLOAD, b'x', props) == 'wrong'


@pytest.mark.parametrize('index', range(len(PROPS)))
def test_tampered_property_value(index):
    props = signed()
    name, value = props[index]
    props[index] = (name, value + '0')
    assert kind_of(PAYLOAD, CORRELATION, props) == 'wrong'


@pytest.mark.parametrize('index', range(len(PROPS)))
def test_tampered_property_name(index):
    props = signed()
    name, value = props[index]
    props[index] = (name.upper(), value)
    assert kind_of(PAYLOAD, CORRELATION, props) == 'wrong'


def test_reordered_properties():
    props = signed()
    props[0], props[1] = props[1], props[0]
    assert kind_of(PAYLOAD, CORRELATION, props) == 'wrong'


@pytest.mark.parametrize('extra', [('more', '1'), ('seq', '0'), ('data_binding', 'other/b')])
@pytest.mark.parametrize('where', [0, 2, -1])
def test_added_property(extra, where):
    props = signed()
    props.insert(where if where >= 0 else len(props), extra)
    assert kind_of(PAYLOAD, CORRELATION, props) == 'wrong'


@pytest.mark.parametrize('index', range(len(PROPS)))
def test_removed_property(index):
    props = signed()
    del props[index]
    assert kind_of(PAYLOAD, CORRELATION, props) == 'wrong'


@pytest.mark.parametrize('sig', ['', '0' * 64, 'zz', 'é' * 64, '\x00',
                                 sign(SECRET, PAYLOAD, CORRELATION, PROPS)[:-1]])
def test_malformed_signature_is_wrong_not_an_exception(sig):
    assert kind_of(PAYLOAD, CORRELATION, PROPS + [('sig', sig)]) == 'wrong'


def test_two_signatures_are_wrong_even_if_one_is_right():
    props = signed()
    assert kind_of(PAYLOAD, CORRELATION, props + [props[-1]]) == 'wrong'
    assert kind_of(PAYLOAD, CORRELATION, props + [('sig', '0' * 64)]) == 'wrong'


def test_signature_error_is_a_protocol_error():
    with pytest.raises(protocol.ProtocolError):
        check_signature(SECRET, PAYLOAD, CORRELATION, PROPS)


def test_the_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(protocol.hmac, 'compare_digest', recording)
    good = signed()
    check_signature(SECRET, PAYLOAD, CORRELATION, good)
    with pytest.raises(SignatureError):
        check_signature(SECRET, PAYLOAD, CORRELATION, PROPS + [('sig', '0' * 64)])
    assert len(calls) == 2
    assert calls[0] == (good[-1][1].encode('ascii'),) * 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


# ---------------------------------------------------------------------------------------------
#  The transport
# ---------------------------------------------------------------------------------------------

def options(secret=SECRET, **kwargs):
    return cfg.ConnectionOptions(role='requester', clientid='test-signing',
                                 shared_secret=secret, **kwargs)


class Recorder:
    """A transport whose paho client records publish() and ack() instead of sending."""

    def __init__(self, secret=SECRET, manual_ack=True, will=None):
        self.received = []
        self.rejected = []
        self.published = []
        self.acked = []
        self.transport = transport.Transport(
            options(secret), ['t/#'], self.received.append, will=will, manual_ack=manual_ack,
            name='requester', on_rejected=self.rejected.append)
        client = self.transport.client
        client.publish = lambda topic, payload, qos, retain, properties: \
            self.published.append((topic, payload, qos, retain, properties))
        client.ack = lambda mid, qos: self.acked.append(mid)

    def deliver(self, message):
        self.transport._on_message(self.transport.client, None, message)


def message(topic='t/a', payload=PAYLOAD, props=(), correlation=None, mid=7, qos=1):
    msg = mqtt.MQTTMessage(mid, topic.encode('utf-8'))
    msg.payload = payload
    msg.qos = qos
    msg.properties = Properties(PacketTypes.PUBLISH)
    if props:
        msg.properties.UserProperty = list(props)
    if correlation is not None:
        msg.properties.CorrelationData = correlation
    return msg


def roundtrip(properties):
    """The properties as a receiver decodes them off the wire."""
    data = properties.pack()
    decoded = Properties(properties.packetType)
    decoded.unpack(data)
    return decoded


def test_publish_appends_a_valid_sig():
    rec = Recorder()
    rec.transport.publish('t/a', PAYLOAD, PROPS, correlation=CORRELATION,
                          response_topic='r/x', expiry=60)
    topic, payload, qos, retain, properties = rec.published[0]
    wire = roundtrip(properties)
    assert wire.UserProperty[:-1] == PROPS and wire.UserProperty[-1][0] == 'sig'
    check_signature(SECRET, payload, wire.CorrelationData, wire.UserProperty)
    assert (wire.ResponseTopic, wire.MessageExpiryInterval) == ('r/x', 60)


@pytest.mark.parametrize('payload, sent', [('text', b'text'), (None, b''), (42, b'42'),
                                           (bytearray(b'ab'), b'ab')])
def test_publish_signs_the_bytes_that_are_sent(payload, sent):
    rec = Recorder()
    rec.transport.publish('t/a', payload, [('n', 5)])
    _, payload_sent, _, _, properties = rec.published[0]
    assert payload_sent == sent
    assert properties.UserProperty[0] == ('n', '5')
    check_signature(SECRET, sent, None, properties.UserProperty)


def test_publish_without_properties_is_signed():
    rec = Recorder()
    rec.transport.publish('t/status', b'{}', qos=1, retain=True)
    _, _, qos, retain, properties = rec.published[0]
    assert (qos, retain) == (1, True)
    assert [name for name, _ in properties.UserProperty] == ['sig']
    check_signature(SECRET, b'{}', None, properties.UserProperty)


def test_final_messages_are_signed():
    rec = Recorder()
    rec.transport.connected.set()
    rec.transport.client.disconnect = lambda: None
    rec.transport.stop([('t/status', b'{"state":"offline"}')])
    topic, payload, qos, retain, properties = rec.published[0]
    assert (topic, qos, retain) == ('t/status', 1, True)
    check_signature(SECRET, payload, None, properties.UserProperty)


def test_the_will_is_signed():
    rec = Recorder(will=('t/status', b'{"state":"offline"}'))
    client = rec.transport.client
    assert client._will_topic == b't/status' and client._will_retain and client._will_qos == 1
    properties = roundtrip(client._will_properties)
    assert properties.packetType == PacketTypes.WILLMESSAGE
    check_signature(SECRET, client._will_payload, None, properties.UserProperty)


def test_signed_messages_reach_the_handler():
    rec = Recorder()
    good = message(props=signed(), correlation=CORRELATION)
    rec.deliver(good)
    assert rec.received == [good]
    assert rec.rejected == [] and rec.acked == []        # the handler acknowledges it
    assert rec.transport.rejected_signatures == 0


def test_messages_signed_by_publish_are_accepted():
    sender, receiver = Recorder(), Recorder()
    sender.transport.publish('t/a', PAYLOAD, PROPS, correlation=CORRELATION)
    _, payload, _, _, properties = sender.published[0]
    wire = roundtrip(properties)
    receiver.deliver(message(payload=payload, props=wire.UserProperty,
                             correlation=wire.CorrelationData))
    assert len(receiver.received) == 1 and receiver.transport.rejected_signatures == 0


def test_unsigned_and_wrongly_signed_messages_are_rejected(caplog):
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate')
    rec = Recorder()
    bad = [message(props=PROPS, mid=1),
           message(props=signed(secret='other'), correlation=CORRELATION, mid=2),
           message(props=PROPS, mid=3, topic='t/b'),
           message(props=signed(), correlation=b'replayed', mid=4)]
    for msg in bad:
        rec.deliver(msg)
    assert rec.received == []
    assert rec.transport.rejected_signatures == 4
    assert rec.rejected == bad
    assert rec.acked == [1, 2, 3, 4]               # acknowledged: no slot held for ever
    lines = [r.getMessage() for r in caplog.records if 'signature' in r.getMessage()]
    # once per kind (missing, wrong), not once per message
    assert lines == [
        'requester: rejected a message without a valid signature on t/a (missing signature)',
        'requester: rejected a message without a valid signature on t/a (wrong signature)']
    assert all(r.levelno == logging.WARNING for r in caplog.records
               if 'signature' in r.getMessage())


def test_a_rejected_qos0_message_is_not_acknowledged():
    rec = Recorder()
    rec.deliver(message(props=PROPS, qos=0))
    assert rec.transport.rejected_signatures == 1 and rec.acked == []


def test_a_failing_rejection_callback_does_not_break_the_loop():
    rec = Recorder()

    def boom(message):
        raise RuntimeError('boom')

    rec.transport.on_rejected = boom
    rec.deliver(message(props=PROPS))
    assert rec.transport.rejected_signatures == 1 and rec.acked == [7]


def test_without_a_secret_nothing_is_signed_or_checked():
    rec = Recorder(secret=None, will=('t/status', b'offline'))
    assert rec.transport.client._will_properties is None
    rec.transport.publish('t/a', PAYLOAD, PROPS)
    rec.transport.publish('t/b', PAYLOAD)
    assert rec.published[0][4].UserProperty == PROPS
    assert not hasattr(rec.published[1][4], 'UserProperty') \
        or not rec.published[1][4].UserProperty
    unsigned, with_sig = message(props=PROPS), message(props=signed(secret='whatever'))
    rec.deliver(unsigned)
    rec.deliver(with_sig)
    assert rec.received == [unsigned, with_sig]
    assert rec.transport.rejected_signatures == 0


def test_an_empty_secret_signs_nothing():
    assert transport.Transport(options(''), [], lambda m: None).secret is None
