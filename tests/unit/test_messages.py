"""Unit tests of the typed message layer of user.mqttreplicate.protocol (its "Messages" section).

Every message kind is encoded to a Wire, carried through a real paho MQTTMessage whose
Properties went through pack()/unpack() (what a broker delivers), with the user property
values converted to str exactly as Transport.publish converts them, read with Envelope.of and
decoded again. The exact user properties (names, values and ORDER) are pinned against
docs/protocol.md and against what the responder and requester built by hand before this layer
(commit c0ee3ee^): signatures (SPEC 5.7) cover the property order, so a reordering would break
peers of mixed versions. No broker, no network, no database.
"""

import json
import math
import struct
import zlib

import pytest
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from user.mqttreplicate import protocol as p
from user.mqttreplicate.protocol import ProtocolError
from user.mqttreplicate.messages import (Ack, Batch, DigestReply, DigestRequest, Envelope,
                                         ErrorReply, LegacyRecord, LiveRecord, Page, RecordsRequest,
                                         ResponderStatus, Wire, decode_answer, decode_request)

NOW = 1_700_000_000
KEY = 'weewx/wx_binding'
NODE = 'mqttreplicate-requester-web-81c2d0'
REQUEST_TOPIC = 'replicate/request/weewx'
RESPONSE_TOPIC = 'replicate/response/' + NODE
ARCHIVE_TOPIC = 'replicate/archive/weewx'
CORRELATION = b'0123456789abcdef0123456789abcdef'


def record(ts=NOW - 300, **values):
    rec = {'dateTime': ts, 'usUnits': 1, 'interval': 5, 'outTemp': 12.5, 'rain': None}
    rec.update(values)
    return rec


def records(n, start=NOW - 86400, step=300):
    return [record(start + i * step, outTemp=10.0 + i / 8) for i in range(n)]


def wire_pairs(wire):
    """The user properties as Transport.publish puts them on the wire: (str, str) pairs."""
    return [(str(k), str(v)) for k, v in wire.properties]


def paho_message(wire, topic=RESPONSE_TOPIC, correlation=None, response_topic=None,
                 expiry=None, pairs=None):
    """A paho MQTTMessage as a receiver gets it: the Properties were packed and unpacked."""
    sent = Properties(PacketTypes.PUBLISH)
    pairs = wire_pairs(wire) if pairs is None else pairs
    if pairs:
        sent.UserProperty = pairs
    if correlation is not None:
        sent.CorrelationData = correlation
    if response_topic is not None:
        sent.ResponseTopic = response_topic
    if expiry is not None:
        sent.MessageExpiryInterval = int(expiry)
    received = Properties(PacketTypes.PUBLISH)
    received.unpack(sent.pack())
    msg = mqtt.MQTTMessage(7, topic.encode('utf-8'))
    msg.payload = wire.payload
    msg.qos = 1
    msg.properties = received
    return msg


def envelope(wire, **kwargs):
    return Envelope.of(paho_message(wire, **kwargs))


def raw(payload, pairs, **kwargs):
    """An envelope of a hand-made message (payload and (name, value) pairs)."""
    return envelope(Wire(payload, []), pairs=[(str(k), str(v)) for k, v in pairs], **kwargs)


def page_pairs(encoding='json', seq=0, count=0, end=None, binding=KEY):
    pairs = [('data_binding', binding), ('protocol', '2'), ('encoding', encoding),
             ('seq', str(seq)), ('count', str(count))]
    if end is not None:
        pairs += [('end', str(end[0])), ('more', str(end[1])), ('last', str(end[2])),
                  ('newest', str(end[3]))]
    return pairs


def rejected(match, function, *args):
    with pytest.raises(ProtocolError, match=match):
        function(*args)


# ---------------------------------------------------------------------------------------------
#  Envelope
# ---------------------------------------------------------------------------------------------

def test_envelope_reads_topic_payload_and_properties_once():
    msg = paho_message(Wire(b'12', [('data_binding', KEY), ('protocol', '2'), ('op', 'x'),
                                    ('op', 'y')]),
                       topic=REQUEST_TOPIC, correlation=CORRELATION,
                       response_topic=RESPONSE_TOPIC, expiry=30)
    env = Envelope.of(msg)
    assert env.topic == REQUEST_TOPIC and env.payload == b'12'
    assert env.props == {'data_binding': KEY, 'protocol': '2', 'op': 'x'}  # first value wins
    assert (env.correlation, env.response_topic, env.expiry) == \
        (CORRELATION, RESPONSE_TOPIC, 30)
    assert env.message is msg
    assert (env.binding, env.version, env.op) == (KEY, 2, 'x')


def test_envelope_without_properties():
    msg = mqtt.MQTTMessage(3, b'replicate/archive/weewx')
    msg.payload = b'{}'
    env = Envelope.of(msg)
    assert env.props == {} and env.binding is None
    assert (env.correlation, env.response_topic, env.expiry) == (None, None, None)
    assert env.version == 1 and env.op == p.OP_RECORDS


@pytest.mark.parametrize('value, version', [(None, 1), ('2', 2), ('1', None), ('3', None),
                                            ('', None)])
def test_envelope_version(value, version):
    pairs = [('data_binding', KEY)] + ([('protocol', value)] if value is not None else [])
    assert raw(b'', pairs).version == version


def test_envelope_equality_ignores_the_paho_message():
    wire = LiveRecord(KEY, record(), NOW - 600).encode()
    assert envelope(wire) == envelope(wire)
    assert envelope(wire) != envelope(wire, correlation=b'x')


# ---------------------------------------------------------------------------------------------
#  Requests: exact wire format
# ---------------------------------------------------------------------------------------------

def test_records_request_wire_format_full():
    wire = RecordsRequest(KEY, NODE, NOW - 3600, until=NOW, limit=500, replace=True).encode()
    assert wire.payload == str(NOW - 3600).encode('ascii')
    assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'), ('node', NODE),
                                ('op', 'records'), ('limit', '500'), ('until', str(NOW)),
                                ('replace', '1')]


def test_records_request_wire_format_without_until_and_replace():
    wire = RecordsRequest(KEY, NODE, 0, limit=2000).encode()
    assert wire.payload == b'0'
    assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'), ('node', NODE),
                                ('op', 'records'), ('limit', '2000')]


def test_records_request_since_travels_as_an_ascii_integer():
    assert RecordsRequest(KEY, NODE, 1699999999.7, limit=10).encode().payload == b'1699999999'


def test_records_request_until_zero_is_sent():
    # until=0 is a value (not "absent"): it must travel
    props = dict(wire_pairs(RecordsRequest(KEY, NODE, 0, until=0, limit=1).encode()))
    assert props['until'] == '0'


def test_digest_request_wire_format():
    wire = DigestRequest(KEY, NODE, NOW - 7 * 86400, NOW, 86400,
                         ('dateTime', 'outTemp')).encode()
    assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'), ('node', NODE),
                                ('op', 'digest')]
    assert json.loads(wire.payload) == {'since': NOW - 7 * 86400, 'until': NOW,
                                        'bucket': 86400, 'columns': ['dateTime', 'outTemp']}
    assert b' ' not in wire.payload       # compact JSON, as encode_json writes it


def test_ack_wire_format():
    wire = Ack(KEY, NODE, {KEY: (NOW, 105120)}).encode()
    assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'), ('node', NODE),
                                ('op', 'ack')]
    assert wire.payload == ('{"%s":{"last":%d,"count":105120}}' % (KEY, NOW)).encode()


def test_compact_ack_wire_format():
    """A compact ack (SPEC 5.6, docs/protocol.md): the payload names the binding; of the
    user properties only node and op are left."""
    full = Ack(KEY, NODE, {KEY: (NOW, 105120)}).encode()
    wire = Ack(None, NODE, {KEY: (NOW, 105120)}).encode()
    assert wire_pairs(wire) == [('node', NODE), ('op', 'ack')]
    assert wire.payload == full.payload
    decoded = decode_request(envelope(wire, topic=REQUEST_TOPIC))
    assert decoded == Ack(None, NODE, {KEY: (NOW, 105120)})


def test_responder_status_says_it_takes_compact_acks():
    status = {'state': 'online', 'bindings': {}, 'nodes': {}}
    assert not ResponderStatus.decode(json.dumps(status).encode(), NODE).compact_acks
    status['acks'] = 'compact'
    assert ResponderStatus.decode(json.dumps(status).encode(), NODE).compact_acks


# ---------------------------------------------------------------------------------------------
#  Requests: round trips
# ---------------------------------------------------------------------------------------------

def request_envelope(wire):
    return envelope(wire, topic=REQUEST_TOPIC, correlation=CORRELATION,
                    response_topic=RESPONSE_TOPIC, expiry=30)


@pytest.mark.parametrize('request_', [
    RecordsRequest(KEY, NODE, NOW - 3600, until=NOW, limit=500, replace=True),
    RecordsRequest(KEY, NODE, NOW - 3600, limit=500),
    RecordsRequest(KEY, NODE, 0, until=0, limit=1),
    RecordsRequest('other/aq_binding', 'n', 5, limit=7, replace=False),
    RecordsRequest(KEY, NODE, NOW - 3600, limit=500, days=NOW - 7200,
                   layout=p.LAYOUT_COLUMNS),
], ids=['full', 'plain', 'zeros', 'other', 'days-columns'])
def test_records_request_round_trip(request_):
    env = request_envelope(request_.encode())
    decoded = decode_request(env)
    assert type(decoded) is RecordsRequest
    assert decoded == request_
    assert (env.correlation, env.response_topic, env.expiry) == \
        (CORRELATION, RESPONSE_TOPIC, 30)


def test_records_request_default_limit_round_trip():
    request_ = RecordsRequest(KEY, NODE, NOW - 3600)
    assert decode_request(request_envelope(request_.encode())) == request_


def test_protocol_1_records_request():
    # the earlier extension: no protocol, no node, no op, no limit
    env = raw(b'1699990000', [('data_binding', KEY)], topic=REQUEST_TOPIC,
              response_topic='replicate/response/old', correlation=b'c')
    assert decode_request(env) == RecordsRequest(KEY, None, 1699990000, None, None, False, 1)


def test_protocol_2_request_has_version_2():
    env = request_envelope(RecordsRequest(KEY, NODE, 5, limit=3).encode())
    assert decode_request(env).version == 2


def test_records_request_replace_only_when_1():
    pairs = [('data_binding', KEY), ('protocol', '2'), ('node', NODE), ('op', 'records'),
             ('limit', '5'), ('replace', '0')]
    assert decode_request(raw(b'5', pairs)).replace is False
    pairs[-1] = ('replace', '1')
    assert decode_request(raw(b'5', pairs)).replace is True


@pytest.mark.parametrize('payload, since', [(b'', 0), (b'None', 0), (b' 42 ', 42),
                                            (b'42.9', 42)])
def test_records_request_since_forms(payload, since):
    env = raw(payload, [('data_binding', KEY), ('protocol', '2'), ('limit', '1')])
    assert decode_request(env).since == since


def test_digest_request_round_trip():
    request_ = DigestRequest(KEY, NODE, NOW - 7 * 86400, NOW, 86400,
                             ('dateTime', 'outTemp', 'barometer'))
    decoded = decode_request(request_envelope(request_.encode()))
    assert type(decoded) is DigestRequest
    assert decoded == request_
    assert isinstance(decoded.columns, tuple)


@pytest.mark.parametrize('entries', [
    {KEY: (NOW, 105120)},
    {KEY: (NOW, None), 'weewx/aq_binding': (0, 0)},
    {},
], ids=['one', 'count-none', 'empty'])
def test_ack_round_trip(entries):
    ack = Ack(KEY, NODE, entries)
    decoded = decode_request(envelope(ack.encode(), topic=REQUEST_TOPIC))
    assert type(decoded) is Ack
    assert decoded == ack


def test_ack_of_protocol_1_op_is_still_an_ack():
    # decode_request dispatches on op first: an ack without protocol is still read as one
    env = raw(b'{}', [('data_binding', KEY), ('node', NODE), ('op', 'ack')])
    assert decode_request(env) == Ack(KEY, NODE, {})


# ---------------------------------------------------------------------------------------------
#  Requests: rejections
# ---------------------------------------------------------------------------------------------

def records_pairs(**extra):
    pairs = [('data_binding', KEY), ('protocol', '2'), ('node', NODE), ('op', 'records'),
             ('limit', '10')]
    replaced = [(k, extra.pop(k)) if k in extra else (k, v) for k, v in pairs]
    return [(k, v) for k, v in replaced if v is not None] + list(extra.items())


@pytest.mark.parametrize('value', ['3', '1', '2.0', ''])
def test_request_unknown_protocol(value):
    rejected('protocol', decode_request, raw(b'0', records_pairs(protocol=value)))


@pytest.mark.parametrize('op', ['delete', 'RECORDS', ''])
def test_request_unknown_op(op):
    rejected('operation', decode_request, raw(b'0', records_pairs(op=op)))


def test_digest_op_on_protocol_1_is_refused():
    payload = DigestRequest(KEY, NODE, 0, 86400, 86400, ('dateTime',)).encode().payload
    env = raw(payload, [('data_binding', KEY), ('node', NODE), ('op', 'digest')])
    rejected('operation', decode_request, env)


@pytest.mark.parametrize('payload, word', [
    (b'abc', 'integer'), (b'-5', 'negative'), (b'inf', 'integer'), (b'\xff', 'integer'),
    (b'99999999999999999999', 'range'),
])
def test_request_bad_since(payload, word):
    rejected(word, decode_request, raw(payload, records_pairs()))


@pytest.mark.parametrize('limit, word', [('0', 'less than 1'), ('-3', 'less than 1'),
                                         ('ten', 'integer'), ('1.5', 'integer'),
                                         ('None', 'integer')])
def test_request_bad_limit(limit, word):
    rejected(word, decode_request, raw(b'0', records_pairs(limit=limit)))


def test_request_bad_until():
    rejected('until', decode_request, raw(b'0', records_pairs(until='soon')))
    rejected('until', decode_request, raw(b'0', records_pairs(until='-1')))


def digest_payload(**fields):
    request_ = {'since': 0, 'until': 86400 * 7, 'bucket': 86400, 'columns': ['dateTime']}
    request_.update(fields)
    return json.dumps(request_).encode()


DIGEST_PAIRS = [('data_binding', KEY), ('protocol', '2'), ('node', NODE), ('op', 'digest')]


def test_good_digest_payload_is_accepted():
    # the base of the rejections below is itself valid
    assert decode_request(raw(digest_payload(), DIGEST_PAIRS)).until == 86400 * 7


@pytest.mark.parametrize('payload, word', [
    (b'[1, 2]', 'object'),
    (b'not json', 'JSON'),
    (digest_payload(since=-1), 'non-negative'),
    (digest_payload(until='7'), 'non-negative'),
    (digest_payload(bucket=1.5), 'non-negative'),
    (digest_payload(since=True), 'non-negative'),
    (digest_payload(since=100, until=100), 'not after'),
    (digest_payload(bucket=30), 'bucket'),
    (digest_payload(bucket=367 * 86400, until=400 * 86400), 'bucket'),
    (digest_payload(bucket=60, until=60 * 1001), 'buckets'),
    (digest_payload(columns=[]), 'columns'),
    (digest_payload(columns='dateTime'), 'columns'),
    (digest_payload(columns=['date time']), 'plain name'),
])
def test_bad_digest_request(payload, word):
    rejected(word, decode_request, raw(payload, DIGEST_PAIRS))


ACK_PAIRS = [('data_binding', KEY), ('protocol', '2'), ('node', NODE), ('op', 'ack')]


def ack_env(payload=b'{}', node=NODE):
    pairs = [pair for pair in ACK_PAIRS if pair[0] != 'node']
    if node is not None:
        pairs.insert(2, ('node', node))
    return raw(payload, pairs, topic=REQUEST_TOPIC)


def test_ack_node_limits_accepted():
    assert decode_request(ack_env(node='n' * 200)).node == 'n' * 200


@pytest.mark.parametrize('node', [None, ''])
def test_ack_without_node(node):
    rejected('node', decode_request, ack_env(node=node))


@pytest.mark.parametrize('node', ['a/b', 'a+', '#', 'n' * 201])
def test_ack_node_that_is_not_a_client_id(node):
    rejected('client id', decode_request, ack_env(node=node))


@pytest.mark.parametrize('payload, word', [(b'[]', 'object'), (b'5', 'object'),
                                           (b'"x"', 'object'), (b'{', 'JSON')])
def test_ack_payload_not_an_object(payload, word):
    rejected(word, decode_request, ack_env(payload))


@pytest.mark.parametrize('entry', [
    5, [NOW, 1], None, {}, {'count': 1}, {'last': None, 'count': 1}, {'last': -1, 'count': 1},
    {'last': True, 'count': 1}, {'last': '5', 'count': 1}, {'last': 1.5, 'count': 1},
    {'last': NOW, 'count': -1}, {'last': NOW, 'count': '3'}, {'last': NOW, 'count': False},
    {'last': 2 ** 63, 'count': 1},
])
def test_ack_entry_not_last_and_count(entry):
    payload = json.dumps({KEY: {'last': NOW, 'count': 1}, 'weewx/x': entry}).encode()
    rejected(r'last.*int.*count.*int', decode_request, ack_env(payload))


def test_ack_entry_without_count_is_accepted():
    payload = json.dumps({KEY: {'last': NOW}}).encode()
    assert decode_request(ack_env(payload)).entries == {KEY: (NOW, None)}


# ---------------------------------------------------------------------------------------------
#  Pages and batches: exact wire format
# ---------------------------------------------------------------------------------------------

def test_empty_page_is_one_final_message():
    wires = Page(KEY, [], more=False, last=NOW - 3600, newest=NOW).encode(100, 100000, False)
    assert len(wires) == 1
    assert wires[0].payload == b'[]'
    assert wire_pairs(wires[0]) == [
        ('data_binding', KEY), ('protocol', '2'), ('encoding', 'json'), ('seq', '0'),
        ('count', '0'), ('end', '1'), ('more', '0'), ('last', str(NOW - 3600)),
        ('newest', str(NOW))]


def test_empty_page_even_when_compressing_is_plain_json():
    (wire,) = Page(KEY, [], False, 5, None).encode(100, 100000, True)
    assert wire.payload == b'[]'
    assert ('encoding', 'json') in wire_pairs(wire) and ('newest', '0') in wire_pairs(wire)


def test_page_of_one_batch_wire_format():
    recs = records(3)
    (wire,) = Page(KEY, recs, more=True, last=recs[-1]['dateTime'],
                   newest=NOW).encode(100, 100000, False)
    assert json.loads(wire.payload) == recs
    assert wire_pairs(wire) == [
        ('data_binding', KEY), ('protocol', '2'), ('encoding', 'json'), ('seq', '0'),
        ('count', '3'), ('end', '1'), ('more', '1'), ('last', str(recs[-1]['dateTime'])),
        ('newest', str(NOW))]


def test_page_compressed_wire_format():
    recs = records(4)
    (wire,) = Page(KEY, recs, False, recs[-1]['dateTime'], NOW).encode(100, 100000, True)
    assert json.loads(zlib.decompress(wire.payload)) == recs
    assert wire_pairs(wire)[2] == ('encoding', 'zlib+json')


def test_page_splits_by_batch_size_and_only_the_last_ends():
    recs = records(10)
    wires = Page(KEY, recs, True, recs[-1]['dateTime'], NOW).encode(3, 100000, False)
    assert [json.loads(w.payload) for w in wires] == [recs[0:3], recs[3:6], recs[6:9],
                                                      recs[9:]]
    for seq, wire in enumerate(wires[:-1]):
        assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'),
                                    ('encoding', 'json'), ('seq', str(seq)), ('count', '3')]
    assert wire_pairs(wires[-1]) == [
        ('data_binding', KEY), ('protocol', '2'), ('encoding', 'json'), ('seq', '3'),
        ('count', '1'), ('end', '1'), ('more', '1'), ('last', str(recs[-1]['dateTime'])),
        ('newest', str(NOW))]


@pytest.mark.parametrize('compress', [False, True])
def test_page_splits_under_max_bytes(compress):
    recs = [record(NOW - 86400 + 300 * i, **{'extra%d' % k: i * 1.25 + k for k in range(40)})
            for i in range(30)]
    single = len(p.encode_json(recs[0]))
    max_bytes = single * 3 + 10 if not compress else 700
    wires = Page(KEY, recs, False, recs[-1]['dateTime'], NOW).encode(100, max_bytes, compress)
    assert len(wires) > 1
    assert all(len(w.payload) <= max_bytes for w in wires)
    got = []
    for seq, wire in enumerate(wires):
        props = dict(wire_pairs(wire))
        assert props['seq'] == str(seq)
        chunk = p.decode_payload(wire.payload, props['encoding'])
        assert props['count'] == str(len(chunk))
        assert ('end' in props) == (seq == len(wires) - 1)
        assert all(name not in props for name in ('more', 'last', 'newest')) or \
            seq == len(wires) - 1
        got.extend(chunk)
    assert got == recs                       # nothing lost, nothing reordered


def test_page_oversize_record_goes_to_the_callback_and_is_left_out():
    recs = records(5)
    huge = record(recs[2]['dateTime'], **{'c%d' % k: k * 1.5 for k in range(200)})
    recs[2] = huge
    seen = []
    wires = Page(KEY, recs, False, recs[-1]['dateTime'], NOW).encode(
        100, 1000, False, lambda rec, size: seen.append((rec, size)))
    assert seen == [(huge, len(p.encode_json([huge])))]
    sent = [rec for w in wires for rec in json.loads(w.payload)]
    assert sent == recs[:2] + recs[3:]
    assert sum(int(dict(wire_pairs(w))['count']) for w in wires) == 4
    assert 'end' in dict(wire_pairs(wires[-1]))


def test_page_oversize_without_callback_raises():
    huge = record(NOW - 600, **{'c%d' % k: k * 1.5 for k in range(200)})
    with pytest.raises(ProtocolError, match='larger'):
        Page(KEY, [huge], False, NOW - 600, NOW).encode(100, 1000, False)


def test_page_of_only_oversize_records_still_ends():
    # the requester must still see the end of the page, else it waits for page_timeout
    huge = record(NOW - 600, **{'c%d' % k: k * 1.5 for k in range(200)})
    seen = []
    wires = Page(KEY, [huge], True, NOW - 600, NOW).encode(
        100, 1000, False, lambda rec, size: seen.append(rec))
    assert seen == [huge]
    assert len(wires) == 1 and wires[0].payload == b'[]'
    assert wire_pairs(wires[0])[3:] == [('seq', '0'), ('count', '0'), ('end', '1'),
                                        ('more', '1'), ('last', str(NOW - 600)),
                                        ('newest', str(NOW))]


# ---------------------------------------------------------------------------------------------
#  Pages and batches: round trips
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('compress', [False, True])
@pytest.mark.parametrize('more', [False, True])
def test_page_round_trip(compress, more):
    recs = records(7)
    page = Page(KEY, recs, more, recs[-1]['dateTime'], NOW)
    wires = page.encode(3, 100000, compress)
    batches = [decode_answer(envelope(w, correlation=CORRELATION)) for w in wires]
    assert all(type(b) is Batch for b in batches)
    assert [b.seq for b in batches] == [0, 1, 2]
    assert [rec for b in batches for rec in b.records] == recs
    assert all(b.version == 2 and b.binding == KEY and b.rejected == () for b in batches)
    for b in batches[:-1]:
        assert (b.end, b.more, b.last, b.newest) == (False, False, None, None)
    assert batches[-1] == Batch(KEY, recs[6:], 2, True, more, recs[-1]['dateTime'], NOW)


def as_columns(recs, names=('dateTime', 'usUnits', 'interval', 'outTemp', 'rain', 'extra')):
    """Records as SourceDatabase.read_columns gives them: every column, None for NULL."""
    return p.Columns(names, [tuple(r.get(n) for n in names) for r in recs])


@pytest.mark.parametrize('compress', [False, True])
def test_page_of_columns_round_trip(compress):
    """A page read as Columns goes column-major (layout=columns on every records message),
    without the columns no record has a value in, and comes back as the same records
    (None values left out, as in the object layout)."""
    recs = records(7)
    page = Page(KEY, as_columns(recs), True, recs[-1]['dateTime'], NOW)
    wires = page.encode(3, 100000, compress)
    assert [dict(wire_pairs(w)).get('layout') for w in wires] == ['columns'] * 3
    payload = wires[0].payload
    body = json.loads(zlib.decompress(payload) if compress else payload)
    # rain and extra hold nothing: left out
    assert body['columns'] == ['dateTime', 'usUnits', 'interval', 'outTemp']
    assert body['values'][0] == [r['dateTime'] for r in recs[:3]]
    batches = [decode_answer(envelope(w, correlation=CORRELATION)) for w in wires]
    compact = [p.compact(r) for r in recs]
    assert [rec for b in batches for rec in b.records] == compact
    assert batches[-1] == Batch(KEY, p.Columns(tuple(body['columns']), [
        tuple(r.values()) for r in compact[6:]]), 2, True, True, recs[-1]['dateTime'], NOW)


def test_columns_slices_and_dates():
    cols = as_columns(records(5), names=('usUnits', 'dateTime', 'outTemp'))
    assert len(cols) == 5 and len(cols[1:3]) == 2 and isinstance(cols[1:3], p.Columns)
    assert (cols.first, cols.last) == (NOW - 86400, NOW - 86400 + 4 * 300)
    assert cols.records()[0] == {'usUnits': 1, 'dateTime': NOW - 86400, 'outTemp': 10.0}


@pytest.mark.parametrize('body, match', [
    ([1, 2], 'not an object'),
    ({'columns': ['dateTime'], 'values': []}, 'not {"columns"'),
    ({'columns': ['dateTime', 'outTemp'], 'values': [[1, 2], [3]]}, 'not {"columns"'),
    ({'columns': ['dateTime'], 'values': [5]}, 'not {"columns"'),
    ({'columns': 'dateTime', 'values': [[1]]}, 'not {"columns"'),
    ({'columns': ['date Time'], 'values': [[1]]}, 'not a plain name'),
    ({'columns': ['dateTime', 'dateTime'], 'values': [[1], [2]]}, 'twice'),
    ({'columns': [['dateTime']], 'values': [[1]]}, 'not a plain name'),
    ({'columns': [{'a': 1}], 'values': [[1]]}, 'not a plain name'),
])
def test_columns_payload_that_is_not_columns_is_refused(body, match):
    env = batch_env(json.dumps(body).encode(), page_pairs(count=1) + [('layout', 'columns')])
    with pytest.raises(ProtocolError, match=match):
        decode_answer(env)


def test_a_columns_payload_of_too_many_values_is_refused(monkeypatch):
    monkeypatch.setattr(p, 'MAX_COLUMN_CELLS', 5)
    body = {'columns': ['dateTime', 'usUnits'], 'values': [[1, 2, 3], [1, 1, 1]]}
    env = batch_env(json.dumps(body).encode(), page_pairs(count=3) + [('layout', 'columns')])
    with pytest.raises(ProtocolError, match='6 values is too large'):
        decode_answer(env)


def test_a_bad_record_in_columns_is_left_out():
    good = record(NOW - 600)
    body = {'columns': ['dateTime', 'usUnits', 'interval', 'outTemp'],
            'values': [[NOW - 600, -5], [1, 1], [5, 5], [12.5, 13.0]]}
    env = batch_env(json.dumps(body).encode(), page_pairs(count=2) + [('layout', 'columns')])
    batch = decode_answer(env)
    assert batch.records.records() == [p.compact(good)]
    assert len(batch.rejected) == 1 and 'dateTime -5' in batch.rejected[0]


@pytest.mark.parametrize('compress', [False, True])
def test_page_of_packed_columns_round_trip(compress):
    """A page read as Columns, asked for packed, goes as binary columns (layout=packed,
    encoding packed or zlib+packed): integers as int64, floats as float64 with NULL as NaN,
    the columns that hold nothing left out; it comes back as the same values and types."""
    recs = records(7)
    recs[2]['outTemp'] = None
    recs[3]['outTemp'] = -1.5e-300
    page = Page(KEY, as_columns(recs), True, recs[-1]['dateTime'], NOW, pack=True)
    wires = page.encode(3, 100000, compress)
    props = [dict(wire_pairs(w)) for w in wires]
    assert [w['layout'] for w in props] == ['packed'] * 3
    assert {w['encoding'] for w in props} == {'zlib+packed' if compress else 'packed'}
    data = zlib.decompress(wires[0].payload) if compress else wires[0].payload
    size = int.from_bytes(data[:4], 'little')
    header = json.loads(data[4:4 + size])
    assert header == {'columns': ['dateTime', 'usUnits', 'interval', 'outTemp'],
                      'types': 'qqqd', 'rows': 3}
    assert len(data) == 4 + size + 3 * 4 * 8
    batches = [decode_answer(envelope(w, correlation=CORRELATION)) for w in wires]
    got = [rec for b in batches for rec in b.records]
    assert got == [p.compact(r) for r in recs]
    assert [type(r['outTemp']) for r in got if 'outTemp' in r] == [float] * 6
    assert all(type(r[k]) is int for r in got for k in ('dateTime', 'usUnits', 'interval'))
    assert batches[-1].end and batches[-1].last == recs[-1]['dateTime']


def test_the_packed_example_of_the_protocol_document():
    """docs/protocol.md, packed batches: the two records of its example."""
    columns = p.Columns.of([
        {'dateTime': 1699920300, 'usUnits': 1, 'interval': 5, 'outTemp': 20.5},
        {'dateTime': 1699920600, 'usUnits': 1, 'interval': 5}])
    header = (b'{"columns":["dateTime","usUnits","interval","outTemp"],"types":"qqqd",'
              b'"rows":2}')
    body = struct.pack('<qqqqqqdd', 1699920300, 1699920600, 1, 1, 5, 5, 20.5, math.nan)
    assert columns.pack() == len(header).to_bytes(4, 'little') + header + body
    assert len(body) == 64
    assert p.Columns.unpack(columns.pack()) == columns


@pytest.mark.parametrize('values, why', [
    ({'outTemp': [1.5, 2]}, 'an integer among floats'),
    ({'interval': [5, None]}, 'an integer column with a NULL'),
    ({'outTemp': [1.5, 'x']}, 'text'),
    ({'dateTime': [NOW - 600, 2 ** 64]}, 'too large for int64'),
])
def test_columns_that_cannot_be_packed_go_as_json(values, why):
    cols = {'dateTime': [NOW - 600, NOW - 300], 'usUnits': [1, 1], 'interval': [5, 5],
            'outTemp': [1.5, None]}
    cols.update(values)
    columns = p.Columns(tuple(cols), list(zip(*cols.values())))
    assert columns.pack() is None, why
    (wire,) = Page(KEY, columns, False, NOW - 300, NOW, pack=True).encode(10, 100000, False)
    props = dict(wire_pairs(wire))
    assert (props['layout'], props['encoding']) == ('columns', 'json')
    assert json.loads(wire.payload)['values'] == [list(v) for v in cols.values()]


def packed_payload(names, types, rows, columns, tail=b''):
    header = json.dumps({'columns': names, 'types': types, 'rows': rows}).encode()
    body = b''.join(struct.pack('<%d%s' % (len(c), t), *c) for t, c in zip(types, columns))
    return len(header).to_bytes(4, 'little') + header + body + tail


GOOD_PACKED = (['dateTime', 'usUnits', 'interval', 'outTemp'], 'qqqd', 2,
               [[NOW - 600, NOW - 300], [1, 1], [5, 5], [12.5, math.nan]])


@pytest.mark.parametrize('payload, match', [
    (b'', 'no header'),
    (b'\x05\x00\x00\x00[1,2]', 'header is not'),
    (b'\xff\xff\x00\x00{', 'not JSON'),
    (packed_payload(['dateTime'], 'i', 1, [[1]]), 'header is not'),
    (packed_payload(['dateTime', 'usUnits'], 'q', 1, [[1]]), 'header is not'),
    (packed_payload(['dateTime'], 'q', True, [[1]]), 'header is not'),
    (packed_payload(['dateTime'], 'q', -1, []), 'header is not'),
    (packed_payload(['date Time'], 'q', 1, [[1]]), 'not a plain name'),
    (packed_payload(['dateTime', 'dateTime'], 'qq', 1, [[1], [1]]), 'twice'),
    (packed_payload(*GOOD_PACKED, tail=b'x'), 'does not hold 2 rows of 4 columns'),
    (packed_payload(*GOOD_PACKED)[:-1], 'does not hold 2 rows'),
    (packed_payload(['dateTime'], 'q', 10 ** 9, []), 'too large'),
    (packed_payload([], '', 5, []), 'header is not'),
])
def test_a_packed_payload_that_is_not_packed_columns_is_refused(payload, match):
    env = batch_env(payload, page_pairs(count=2, encoding='packed') + [('layout', 'packed')])
    with pytest.raises(ProtocolError, match=match):
        decode_answer(env)


def test_a_bad_record_in_packed_columns_is_left_out():
    names, types, rows, columns = GOOD_PACKED
    columns = [[NOW - 600, NOW - 300, NOW - 200], [1, 1, 1], [5, 0, 5],
               [12.5, 1.0, -math.inf]]
    env = batch_env(zlib.compress(packed_payload(names, types, 3, columns)),
                    page_pairs(count=3, encoding='zlib+packed') + [('layout', 'packed')])
    batch = decode_answer(env)
    assert batch.records.records() == [
        {'dateTime': NOW - 600, 'usUnits': 1, 'interval': 5, 'outTemp': 12.5},
        {'dateTime': NOW - 200, 'usUnits': 1, 'interval': 5, 'outTemp': -math.inf}]
    assert len(batch.rejected) == 1 and 'interval 0' in batch.rejected[0]


def test_an_infinite_value_travels_as_it_is_in_every_layout():
    """SQLite keeps inf: a record holding one is replicated as it is (packed natively, in
    JSON as Infinity), never refused or left out."""
    record = {'dateTime': NOW - 300, 'usUnits': 1, 'interval': 5, 'outTemp': math.inf,
              'windchill': -math.inf, 'barometer': 30.1}
    columns = p.Columns.of([record])
    for layout in (columns.pack(), p.encode_json(columns.to_json()), p.encode_json([record])):
        assert b'NaN' not in layout
    assert p.Columns.unpack(columns.pack()).records() == [record]
    assert p.decode_payload(p.encode_json([record]), 'json') == [record]
    assert p.validate_record(dict(record), NOW) == record
    kept, refused = columns.checked(NOW)
    assert kept.records() == [record] and refused == []


@pytest.mark.parametrize('column, value, good', [
    ('dateTime', 1, True), ('dateTime', 0, False), ('dateTime', -1, False),
    ('dateTime', NOW + p.MAX_FUTURE_SECONDS - 60, True),
    ('dateTime', NOW + p.MAX_FUTURE_SECONDS + 60, False),
    ('dateTime', True, False), ('dateTime', None, False),
    ('usUnits', 16, True), ('usUnits', 17, True), ('usUnits', 2, False),
    ('usUnits', True, False), ('usUnits', None, False),
    ('interval', 0.001, True), ('interval', 0, False), ('interval', -5, False),
    ('interval', math.inf, False), ('interval', None, False), ('interval', False, False),
    ('outTemp', 2 ** 63 - 1, True), ('outTemp', -2 ** 63, True), ('outTemp', 2 ** 63, False),
    ('outTemp', -2 ** 63 - 1, False), ('outTemp', math.inf, True),
    ('outTemp', -math.inf, True), ('outTemp', math.nan, False), ('outTemp', True, False),
    ('outTemp', 'x', False), ('outTemp', [1], False), ('outTemp', -1e308, True),
    ('outTemp', 10 ** 400, False), ('interval', 10 ** 400, False),
])
def test_whole_columns_pass_only_where_every_record_does(column, value, good):
    """The check of whole columns at once (the fast path of column-major batches) draws
    each of validate_record's lines; what it lets through, validate_record keeps."""
    cols = {'dateTime': [NOW - 600, NOW - 300], 'usUnits': [1, 1], 'interval': [5, 5],
            'outTemp': [1.5, None]}
    cols[column][1] = value
    columns = p.Columns(tuple(cols), list(zip(*cols.values())))
    assert p._columns_valid(columns, NOW) is good
    kept, refused = columns.checked(NOW)
    assert (len(kept), len(refused)) == ((2, 0) if good else (1, 1))


def test_a_packed_encoding_is_not_json():
    env = batch_env(packed_payload(*GOOD_PACKED), page_pairs(count=2, encoding='packed'))
    with pytest.raises(ProtocolError, match="encoding 'packed' where JSON"):
        decode_answer(env)


def test_a_request_for_columns_from_protocol_1_is_plain():
    env = raw(b'1699990000', [('data_binding', KEY), ('layout', 'columns'), ('days', '5')],
              topic=REQUEST_TOPIC, response_topic='replicate/response/old', correlation=b'c')
    assert decode_request(env) == RecordsRequest(KEY, None, 1699990000, None, None, False, 1)


def test_empty_page_round_trip():
    (wire,) = Page(KEY, [], False, NOW - 60, None).encode(10, 10000, True)
    batch = decode_answer(envelope(wire))
    # newest None travels as 0
    assert batch == Batch(KEY, [], 0, True, False, NOW - 60, 0)
    assert batch.sent == 0


# ---------------------------------------------------------------------------------------------
#  Batches: rejections and protocol 1
# ---------------------------------------------------------------------------------------------

def batch_env(payload, pairs):
    return raw(payload, pairs, correlation=CORRELATION)


def test_batch_without_seq():
    pairs = [pair for pair in page_pairs(count=1) if pair[0] != 'seq']
    rejected('seq', Batch.decode, batch_env(p.encode_json([record()]), pairs))


def test_batch_seq_not_an_integer():
    pairs = [('seq', 'x') if k == 'seq' else (k, v) for k, v in page_pairs(count=1)]
    rejected('seq', Batch.decode, batch_env(p.encode_json([record()]), pairs))


@pytest.mark.parametrize('count', [0, 1, 3])
def test_batch_count_differs_from_records_sent(count):
    payload = p.encode_json(records(2))
    rejected('count', Batch.decode, batch_env(payload, page_pairs(count=count)))


def test_batch_without_count_is_accepted():
    pairs = [pair for pair in page_pairs(count=2) if pair[0] != 'count']
    assert len(Batch.decode(batch_env(p.encode_json(records(2)), pairs)).records) == 2


@pytest.mark.parametrize('payload, word', [(b'5', 'not a list'), (b'"x"', 'not a list'),
                                           (b'null', 'not a list'), (b'[', 'JSON')])
def test_batch_not_a_list(payload, word):
    rejected(word, Batch.decode, batch_env(payload, page_pairs(count=1)))


def test_batch_bad_encoding():
    rejected('encoding', Batch.decode,
             batch_env(b'[]', page_pairs(encoding='gzip+json', count=0)))
    rejected('inflate', Batch.decode,
             batch_env(b'[]', page_pairs(encoding='zlib+json', count=0)))


def test_batch_with_a_bad_record_keeps_the_good_ones():
    good = records(2)
    bad = record(NOW - 100, usUnits=99)
    payload = p.encode_json([good[0], bad, good[1]])
    batch = Batch.decode(batch_env(payload, page_pairs(count=3)))   # count = records sent
    assert batch.records == good
    assert len(batch.rejected) == 1 and 'usUnits' in batch.rejected[0]
    assert batch.sent == 3


def test_protocol_1_batch():
    rec = record()
    env = batch_env(p.encode_json(rec), [('data_binding', KEY), ('seq', '4'), ('end', '1')])
    batch = Batch.decode(env)
    assert batch == Batch(KEY, [rec], None, version=1)
    assert (batch.seq, batch.end, batch.more, batch.last) == (None, False, False, None)


def test_protocol_1_batch_keeps_good_records_too():
    env = batch_env(p.encode_json([record(), {'dateTime': 'x'}]), [('data_binding', KEY)])
    batch = Batch.decode(env)
    assert batch.version == 1 and batch.records == [record()] and len(batch.rejected) == 1


def test_batch_not_end_ignores_more_last_newest():
    pairs = page_pairs(count=1) + [('end', '0'), ('more', '1'), ('last', str(NOW)),
                                   ('newest', str(NOW))]
    batch = Batch.decode(batch_env(p.encode_json([record()]), pairs))
    assert (batch.end, batch.more, batch.last, batch.newest) == (False, False, None, None)


def test_batch_end_reads_more_last_newest():
    # the counterpart of the test above: with end=1 the same properties are read
    pairs = page_pairs(count=1, end=(1, 1, NOW - 1, NOW))
    batch = Batch.decode(batch_env(p.encode_json([record()]), pairs))
    assert (batch.end, batch.more, batch.last, batch.newest) == (True, True, NOW - 1, NOW)


def test_batch_end_with_bad_more():
    pairs = page_pairs(count=1) + [('end', '1'), ('more', 'yes')]
    rejected('more', Batch.decode, batch_env(p.encode_json([record()]), pairs))


# ---------------------------------------------------------------------------------------------
#  Digest replies
# ---------------------------------------------------------------------------------------------

BUCKETS = [[NOW - 2 * 86400, 288, 'a' * 64], [NOW - 86400, 287, 'b' * 64]]


@pytest.mark.parametrize('compress, encoding', [(False, 'json'), (True, 'zlib+json')])
def test_digest_reply_wire_format(compress, encoding):
    wire = DigestReply(KEY, BUCKETS, 17).encode(compress)
    assert p.decode_payload(wire.payload, encoding) == BUCKETS
    assert wire_pairs(wire) == [
        ('data_binding', KEY), ('protocol', '2'), ('encoding', encoding), ('seq', '0'),
        ('count', '2'), ('end', '1'), ('more', '0'), ('units', '17')]


def test_digest_reply_without_units_sends_0():
    assert wire_pairs(DigestReply(KEY, [], None).encode(False))[-1] == ('units', '0')


@pytest.mark.parametrize('reply', [DigestReply(KEY, BUCKETS, 17), DigestReply(KEY, BUCKETS, 1),
                                   DigestReply(KEY, [], None)], ids=['metricwx', 'us', 'empty'])
@pytest.mark.parametrize('compress', [False, True])
def test_digest_reply_round_trip(reply, compress):
    decoded = decode_answer(envelope(reply.encode(compress), correlation=CORRELATION),
                            DigestReply)
    assert type(decoded) is DigestReply
    assert decoded == reply


def digest_pairs(**changes):
    pairs = [('data_binding', KEY), ('protocol', '2'), ('encoding', 'json'), ('seq', '0'),
             ('count', '2'), ('end', '1'), ('more', '0'), ('units', '1')]
    return [(k, str(changes[k])) if k in changes else (k, v) for k, v in pairs
            if changes.get(k, '') is not None]


def test_digest_reply_base_is_valid():
    assert DigestReply.decode(raw(p.encode_json(BUCKETS), digest_pairs())).buckets == BUCKETS


@pytest.mark.parametrize('changes', [{'seq': 1}, {'end': 0}, {'end': None}])
def test_digest_reply_that_is_not_one_message(changes):
    rejected('one message', DigestReply.decode,
             raw(p.encode_json(BUCKETS), digest_pairs(**changes)))


@pytest.mark.parametrize('payload', [b'{}', b'5', b'"x"'])
def test_digest_reply_not_a_list(payload):
    rejected('not a list', DigestReply.decode, raw(payload, digest_pairs()))


@pytest.mark.parametrize('entry', [
    [NOW, 3], [NOW, 3, 'x', 4], [-1, 3, 'x'], [NOW, -3, 'x'], [True, 3, 'x'], [NOW, 3.5, 'x'],
    [NOW, 3, 7], [str(NOW), 3, 'x'], {'start': NOW}, 'x', None,
])
def test_digest_reply_malformed_entry(entry):
    payload = json.dumps(BUCKETS + [entry]).encode()
    rejected('digest entry', DigestReply.decode, raw(payload, digest_pairs()))


# ---------------------------------------------------------------------------------------------
#  Error replies and decode_answer
# ---------------------------------------------------------------------------------------------

def test_error_reply_wire_format():
    wire = ErrorReply(KEY, "unknown binding 'weewx/aq_binding'").encode()
    assert wire.payload == b'[]'
    assert wire_pairs(wire) == [
        ('data_binding', KEY), ('protocol', '2'), ('seq', '0'), ('count', '0'), ('end', '1'),
        ('more', '0'), ('error', "unknown binding 'weewx/aq_binding'")]


@pytest.mark.parametrize('kind', [Batch, DigestReply])
def test_error_reply_round_trip(kind):
    reply = ErrorReply('weewx/aq_binding', "unknown binding 'weewx/aq_binding'")
    decoded = decode_answer(envelope(reply.encode(), correlation=CORRELATION), kind)
    assert type(decoded) is ErrorReply
    assert decoded == reply


def test_error_reply_is_an_empty_final_page_to_a_reader_that_ignores_error():
    batch = Batch.decode(envelope(ErrorReply(KEY, 'no').encode()))
    assert (batch.records, batch.seq, batch.end, batch.more) == ([], 0, True, False)


def test_error_property_on_protocol_1_is_not_an_error_reply():
    env = raw(p.encode_json(record()), [('data_binding', KEY), ('error', 'x')])
    answer = decode_answer(env)
    assert type(answer) is Batch and answer.version == 1 and answer.records == [record()]


def test_decode_answer_without_error_is_the_kind():
    (wire,) = Page(KEY, [], False, 0, 0).encode(10, 1000, False)
    assert type(decode_answer(envelope(wire))) is Batch
    assert type(decode_answer(envelope(DigestReply(KEY, []).encode(False)), DigestReply)) \
        is DigestReply


def test_decode_answer_raises_for_a_bad_answer():
    rejected('seq', decode_answer, raw(b'[]', [('data_binding', KEY), ('protocol', '2')]))


# ---------------------------------------------------------------------------------------------
#  Live records and protocol-1 records
# ---------------------------------------------------------------------------------------------

def test_live_record_wire_format():
    rec = record()
    wire = LiveRecord(KEY, rec, NOW - 600).encode()
    assert json.loads(wire.payload) == rec and wire.payload.startswith(b'{')
    assert wire_pairs(wire) == [('data_binding', KEY), ('protocol', '2'),
                                ('prev', str(NOW - 600))]


@pytest.mark.parametrize('prev', [None, 0])
def test_live_record_without_prev_sends_0(prev):
    assert wire_pairs(LiveRecord(KEY, record(), prev).encode())[-1] == ('prev', '0')


@pytest.mark.parametrize('prev', [NOW - 600, 0])
def test_live_record_round_trip(prev):
    live = LiveRecord(KEY, record(), prev)
    decoded = LiveRecord.decode(envelope(live.encode(), topic=ARCHIVE_TOPIC))
    assert decoded == live


def test_live_record_prev_missing_is_none():
    env = raw(p.encode_json(record()), [('data_binding', KEY), ('protocol', '2')],
              topic=ARCHIVE_TOPIC)
    assert LiveRecord.decode(env).prev is None


def test_live_record_prev_present():
    env = raw(p.encode_json(record()), [('data_binding', KEY), ('protocol', '2'),
                                        ('prev', '1699999000')], topic=ARCHIVE_TOPIC)
    assert LiveRecord.decode(env).prev == 1699999000


def test_live_record_bad_prev():
    env = raw(p.encode_json(record()), [('data_binding', KEY), ('protocol', '2'),
                                        ('prev', 'x')], topic=ARCHIVE_TOPIC)
    rejected('prev', LiveRecord.decode, env)


@pytest.mark.parametrize('payload, count', [(b'[]', '0'),
                                            (p.encode_json(records(2)), '2')])
def test_live_record_with_0_or_2_records(payload, count):
    env = raw(payload, [('data_binding', KEY), ('protocol', '2'), ('prev', '0')])
    rejected('%s records' % count, LiveRecord.decode, env)


def test_live_record_with_a_bad_record():
    env = raw(p.encode_json(record(usUnits=2)), [('data_binding', KEY), ('protocol', '2')])
    rejected('usUnits', LiveRecord.decode, env)


def test_live_record_not_a_record():
    rejected('not a list', LiveRecord.decode, raw(b'5', [('data_binding', KEY)]))


def test_legacy_record_wire_format():
    rec = record()
    wire = LegacyRecord(KEY, rec).encode()
    assert wire_pairs(wire) == [('data_binding', KEY)]
    assert wire.payload == p.encode_json(rec)
    assert json.loads(wire.payload) == rec          # one object, not a list


def test_legacy_record_round_trip():
    rec = record()
    env = envelope(LegacyRecord(KEY, rec).encode(), correlation=CORRELATION)
    assert env.version == 1
    batch = decode_answer(env)
    assert batch == Batch(KEY, [rec], None, version=1)
    # an earlier responder's live record reads the same way, without prev
    assert LiveRecord.decode(env) == LiveRecord(KEY, rec, None)


# ---------------------------------------------------------------------------------------------
#  Responder status
# ---------------------------------------------------------------------------------------------

def status(**fields):
    doc = {'state': 'online', 'role': 'responder', 'version': '0.1.0', 'instance': 'weewx',
           'time': NOW, 'connected': NOW - 86400,
           'bindings': {KEY: {'newest': NOW}},
           'nodes': {NODE: {KEY: {'last': NOW - 300, 'count': 105120, 'time': NOW,
                                  'lag': 300}},
                     'other-node': {'weewx/aq_binding': {'last': 5}}},
           'counters': {'acks': 412}}
    doc.update(fields)
    return json.dumps(doc).encode()


def test_responder_status_online():
    st = ResponderStatus.decode(status(), NODE)
    assert st == ResponderStatus('online', NOW - 86400, {KEY: NOW}, {KEY: NOW - 300})
    assert st.online


def test_responder_status_of_another_node_acknowledges_nothing_of_ours():
    st = ResponderStatus.decode(status(), 'someone-else')
    assert st.acknowledged == {} and st.newest == {KEY: NOW}


@pytest.mark.parametrize('connected', [True, -5, '1700000000', 1.5, None, 2 ** 63])
def test_responder_status_connected_only_plain_int(connected):
    assert ResponderStatus.decode(status(connected=connected), NODE).connected is None


def test_responder_status_keeps_only_plain_ints():
    bindings = {'a/1': {'newest': 5}, 'a/2': {'newest': True}, 'a/3': {'newest': -1},
                'a/4': {'newest': '7'}, 'a/5': 3, 'a/6': {'newest': 2.5}, 'a/7': {}, 'a/8': {
                    'newest': 0}}
    mine = {'a/1': {'last': 4}, 'a/2': {'last': False}, 'a/3': {'last': -2},
            'a/4': {'last': '4'}, 'a/5': [4], 'a/6': {'count': 4}}
    st = ResponderStatus.decode(status(bindings=bindings, nodes={NODE: mine}), NODE)
    assert st.newest == {'a/1': 5, 'a/8': 0}
    assert st.acknowledged == {'a/1': 4}


@pytest.mark.parametrize('fields', [{'bindings': None}, {'bindings': {}}, {'nodes': None},
                                    {'nodes': {}}, {'nodes': {NODE: None}}])
def test_responder_status_online_with_nothing_yet(fields):
    st = ResponderStatus.decode(status(**fields), NODE)
    assert st.online and st.connected == NOW - 86400
    assert st.newest == ({} if 'bindings' in fields else {KEY: NOW})
    assert st.acknowledged == ({} if 'nodes' in fields else {KEY: NOW - 300})


def test_responder_status_offline():
    st = ResponderStatus.decode(status(state='offline'), NODE)
    # nothing else of an offline status is read
    assert st == ResponderStatus('offline')
    assert not st.online and st.connected is None and st.newest == {} and st.acknowledged == {}


@pytest.mark.parametrize('state, kept', [('starting', 'starting'), ('Online', 'Online'),
                                         (5, None), (None, None), (['online'], None)])
def test_responder_status_unknown_state(state, kept):
    st = ResponderStatus.decode(status(state=state), NODE)
    assert st == ResponderStatus(kept)
    assert not st.online


def test_responder_status_without_state():
    assert ResponderStatus.decode(b'{}', NODE) == ResponderStatus(None)


@pytest.mark.parametrize('payload, word', [(b'[]', 'object'), (b'"online"', 'object'),
                                           (b'5', 'object'), (b'null', 'object'),
                                           (b'{nope', 'JSON')])
def test_responder_status_not_an_object(payload, word):
    rejected(word, ResponderStatus.decode, payload, NODE)


@pytest.mark.parametrize('bindings', [[KEY], 'weewx/wx_binding', 5])
def test_responder_status_bindings_not_an_object(bindings):
    rejected('not an object', ResponderStatus.decode, status(bindings=bindings), NODE)


@pytest.mark.parametrize('mine', [[1], 'x', 5])
def test_responder_status_our_node_entry_not_an_object(mine):
    rejected('not an object', ResponderStatus.decode, status(nodes={NODE: mine}), NODE)


def test_responder_status_nodes_not_an_object_is_ignored():
    # as the requester did before this layer (c0ee3ee^): only our own entry must be an object
    st = ResponderStatus.decode(status(nodes=[NODE]), NODE)
    assert st.online and st.acknowledged == {} and st.newest == {KEY: NOW}
