"""Unit tests of user.mqttreplicate.protocol: topics, record validation, payloads, properties.

Pure functions only: no broker, no network, no database.
"""

import json
import math
import zlib

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from user.mqttreplicate import protocol as p
from user.mqttreplicate.protocol import ProtocolError

NOW = 1_700_000_000


def record(ts=NOW - 300, **values):
    rec = {'dateTime': ts, 'usUnits': 1, 'interval': 5, 'outTemp': 12.5, 'rain': None}
    rec.update(values)
    return rec


# ---------------------------------------------------------------------------------------------
#  Topics
# ---------------------------------------------------------------------------------------------

def test_topic_helpers():
    assert p.request_topic('replicate/request', 'weewx') == 'replicate/request/weewx'
    assert p.response_topic('replicate/response', 'node-1') == 'replicate/response/node-1'
    assert p.archive_topic('replicate/archive', 'weewx') == 'replicate/archive/weewx'
    assert p.status_topic('replicate/status', 'weewx') == 'replicate/status/weewx'
    assert p.status_topic('replicate/status', 'weewx', 'node-1') == \
        'replicate/status/weewx/node-1'
    assert p.status_topic('replicate/status', 'weewx', None) == 'replicate/status/weewx'


@pytest.mark.parametrize('topic, expected', [
    ('replicate/request/weewx', 'weewx'),
    ('replicate/request/other-station', 'other-station'),
    ('replicate/request/weewx/extra', None),
    ('replicate/request/', None),
    ('replicate/request', None),
    ('replicate/requestX/weewx', None),
    ('replicate/requestweewx', None),
    ('other/request/weewx', None),
    ('', None),
])
def test_instance_of(topic, expected):
    assert p.instance_of(topic, 'replicate/request') == expected


def test_instance_of_roundtrips_topic_helpers():
    for make in (p.request_topic, p.archive_topic, p.status_topic):
        assert p.instance_of(make('a/b/c', 'inst'), 'a/b/c') == 'inst'


def test_new_correlation_is_unique_bytes():
    values = {p.new_correlation() for _ in range(100)}
    assert len(values) == 100
    assert all(isinstance(v, bytes) and v for v in values)


# ---------------------------------------------------------------------------------------------
#  validate_record: accepted
# ---------------------------------------------------------------------------------------------

def test_good_record_is_returned():
    rec = record()
    assert p.validate_record(rec, NOW) is rec


@pytest.mark.parametrize('units', [0x01, 0x10, 0x11])
def test_known_unit_systems(units):
    p.validate_record(record(usUnits=units), NOW)


def test_integral_float_datetime_becomes_int():
    rec = p.validate_record(record(ts=float(NOW - 300)), NOW)
    assert rec['dateTime'] == NOW - 300
    assert type(rec['dateTime']) is int


def test_none_values_are_fine():
    rec = {'dateTime': NOW, 'usUnits': 16, 'interval': 5, 'outTemp': None, 'barometer': None}
    assert p.validate_record(rec, NOW) == rec


def test_float_interval_is_fine():
    p.validate_record(record(interval=0.5), NOW)


def test_numbers_of_every_kind():
    p.validate_record(record(a=0, b=-5, c=1e300, d=-0.0, e=2 ** 63 - 1, f_g=3, h=-2 ** 63),
                      NOW)


def test_datetime_up_to_one_day_ahead_is_accepted():
    p.validate_record(record(ts=NOW + p.MAX_FUTURE_SECONDS), NOW)


def test_now_defaults_to_the_clock():
    import time
    p.validate_record(record(ts=int(time.time())))
    with pytest.raises(ProtocolError):
        p.validate_record(record(ts=int(time.time()) + 2 * 86400))


def test_maximum_number_of_keys_is_accepted():
    rec = {'dateTime': NOW, 'usUnits': 1, 'interval': 5}
    rec.update({'k%d' % i: i for i in range(p.MAX_RECORD_KEYS - 3)})
    assert len(rec) == p.MAX_RECORD_KEYS
    p.validate_record(rec, NOW)


def test_plain_column_names():
    p.validate_record(record(extraTemp1=1.0, soil_moist_2=3, _x=1, **{'a' * 64: 1}), NOW)


# ---------------------------------------------------------------------------------------------
#  validate_record: refused
# ---------------------------------------------------------------------------------------------

def refused(rec, now=NOW):
    with pytest.raises(ProtocolError) as info:
        p.validate_record(rec, now)
    return str(info.value)


@pytest.mark.parametrize('value', [[record()], 'x', 42, None, (1, 2)])
def test_record_must_be_an_object(value):
    assert 'not an object' in refused(value)


@pytest.mark.parametrize('ts', [None, 0, -1, -NOW, True, False, '1700000000', 1.5, NOW + 0.25,
                                float('nan'), float('inf'), [NOW], {'t': NOW}])
def test_bad_datetime(ts):
    rec = record()
    if ts is None:
        del rec['dateTime']
    else:
        rec['dateTime'] = ts
    assert 'dateTime' in refused(rec)


def test_datetime_more_than_a_day_ahead():
    message = refused(record(ts=NOW + p.MAX_FUTURE_SECONDS + 1))
    assert 'future' in message


@pytest.mark.parametrize('units', [None, 0, 2, 0x12, 'US', '1', True, [1], 1.5])
def test_bad_unit_system(units):
    rec = record(usUnits=units)
    if units is None:
        del rec['usUnits']
    assert 'usUnits' in refused(rec)


def test_bool_unit_system_is_refused_even_though_true_equals_one():
    assert True == 0x01     # noqa: E712 - the reason for the explicit bool check
    assert 'usUnits' in refused(record(usUnits=True))


@pytest.mark.parametrize('interval', [None, 0, -5, '5', 'five', True, float('nan'),
                                      float('inf'), [5], 0.0, -0.5])
def test_bad_interval(interval):
    assert 'interval' in refused(record(interval=interval))


def test_missing_interval_is_refused():
    rec = record()
    del rec['interval']
    assert 'interval' in refused(rec)


@pytest.mark.parametrize('value', ['12.5', '', 'NULL', float('nan'), 'Infinity', [1],
                                   {'a': 1}, True, False, b'1'])
def test_bad_values(value):
    message = refused(record(outTemp=value))
    assert 'outTemp' in message


@pytest.mark.parametrize('name', [
    'out Temp', 'x"', "x'", 'x; DROP TABLE archive', 'x;DROP TABLE archive;--',
    '"; DELETE FROM archive; --', 'a-b', 'a.b', '(x)', '', 'a' * 65, 'x\x00', 'tab\t',
    'dateTime, usUnits', '*',
])
def test_bad_column_names(name):
    assert 'column name' in refused(record(**{name: 1.0}))


@pytest.mark.parametrize('name', [1, None, ('a',), 1.5])
def test_non_string_column_names(name):
    rec = record()
    rec[name] = 1
    assert 'column name' in refused(rec)


def test_too_many_keys():
    rec = {'dateTime': NOW, 'usUnits': 1, 'interval': 5}
    rec.update({'k%d' % i: i for i in range(p.MAX_RECORD_KEYS - 2)})
    assert len(rec) == p.MAX_RECORD_KEYS + 1
    assert 'keys' in refused(rec)


@pytest.mark.parametrize('field, value', [
    ('outTemp', 10 ** 400), ('interval', 10 ** 400), ('outTemp', 2 ** 63),
    ('interval', 2 ** 63), ('outTemp', -2 ** 63 - 1),
], ids=['outTemp-1e400', 'interval-1e400', 'outTemp-2^63', 'interval-2^63', 'outTemp--2^63-1'])
def test_huge_integer_value_is_a_protocol_error(field, value):
    rec = record()
    rec[field] = value
    with pytest.raises(ProtocolError):
        p.validate_record(rec, NOW)


def test_compact_drops_none():
    assert p.compact({'dateTime': 1, 'a': None, 'b': 0}) == {'dateTime': 1, 'b': 0}


# ---------------------------------------------------------------------------------------------
#  Batches
# ---------------------------------------------------------------------------------------------

def many_records(n, start=NOW - 10 * 86400, width=8):
    return [dict({'dateTime': start + 300 * i, 'usUnits': 1, 'interval': 5},
                 **{'obs%d' % k: round(i * 0.37 + k * 1.13, 3) for k in range(width)})
            for i in range(n)]


@pytest.mark.parametrize('compress, encoding', [(True, p.ENCODING_ZLIB),
                                                (False, p.ENCODING_JSON)])
def test_encode_decode_roundtrip(compress, encoding):
    records = many_records(50)
    payload, enc = p.encode_batch(records, compress)
    assert enc == encoding
    assert isinstance(payload, bytes)
    assert p.decode_records(payload, enc) == records


def test_compressed_is_smaller_and_uncompressed_is_plain_json():
    records = many_records(200)
    plain, _ = p.encode_batch(records, False)
    packed, _ = p.encode_batch(records, True)
    assert json.loads(plain) == records
    assert len(packed) < len(plain)
    assert json.loads(zlib.decompress(packed)) == records


def test_nan_on_the_wire_is_refused_and_infinity_kept():
    """No database holds NaN; SQLite holds inf, which travels as it is."""
    payload, encoding = p.encode_batch([record(outTemp=float('nan'))], False)
    with pytest.raises(ProtocolError, match='outTemp'):
        p.decode_records(payload, encoding)
    payload, encoding = p.encode_batch([record(outTemp=float('-inf'))], True)
    assert p.decode_records(payload, encoding)[0]['outTemp'] == float('-inf')


def test_single_record_payload_is_accepted():
    rec = record()
    assert p.decode_records(p.encode_json(rec), p.ENCODING_JSON) == [rec]
    assert p.decode_records(p.encode_json(rec), None) == [rec]


def test_empty_batch():
    payload, enc = p.encode_batch([], True)
    assert p.decode_records(payload, enc) == []
    assert p.decode_records(b'[]', p.ENCODING_JSON) == []


@pytest.mark.parametrize('compress', [True, False])
@pytest.mark.parametrize('batch_size', [1, 7, 100, 10000])
def test_split_batches_bounds_size_and_keeps_order(compress, batch_size):
    records = many_records(600, width=12)
    max_bytes = 4096
    batches = list(p.split_batches(records, batch_size, max_bytes, compress))
    out = []
    for payload, encoding, count in batches:
        assert len(payload) <= max_bytes
        assert 1 <= count <= batch_size
        decoded = p.decode_records(payload, encoding)
        assert len(decoded) == count
        assert encoding == (p.ENCODING_ZLIB if compress else p.ENCODING_JSON)
        out.extend(decoded)
    assert out == records
    assert sum(count for _, _, count in batches) == len(records)


def test_split_batches_honours_batch_size_when_bytes_allow():
    records = many_records(250, width=2)
    batches = list(p.split_batches(records, 100, 10 ** 7, False))
    assert [count for _, _, count in batches] == [100, 100, 50]


def test_split_batches_halves_oversized_batches():
    records = many_records(64, width=20)
    one, _ = p.encode_batch(records[:1], False)
    max_bytes = len(one) * 5
    batches = list(p.split_batches(records, 64, max_bytes, False))
    assert all(len(payload) <= max_bytes for payload, _, _ in batches)
    assert len(batches) > 1
    assert [r for payload, enc, _ in batches for r in p.decode_records(payload, enc)] == records


def test_split_batches_of_nothing():
    assert list(p.split_batches([], 100, 4096, True)) == []


@pytest.mark.parametrize('compress', [True, False])
def test_split_batches_refuses_a_record_that_can_never_fit(compress):
    import random
    rnd = random.Random(1)
    big = {'dateTime': NOW, 'usUnits': 1, 'interval': 5}
    big.update({'k%d' % i: rnd.random() for i in range(400)})    # incompressible-ish
    records = many_records(3) + [big] + many_records(3, start=NOW)
    with pytest.raises(ProtocolError) as info:
        list(p.split_batches(records, 100, 4096, compress))
    assert str(NOW) in str(info.value)


# ---------------------------------------------------------------------------------------------
#  decode_payload: hostile input
# ---------------------------------------------------------------------------------------------

def zlib_bomb(inflated_size, chunk=1 << 20):
    """A zlib stream of '[' + spaces inflating to inflated_size bytes, built in chunks so the
    test never holds the inflated text."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b'[')]
    block = b' ' * chunk
    left = inflated_size - 2
    while left > 0:
        parts.append(packer.compress(block[:min(chunk, left)]))
        left -= chunk
    parts.append(packer.compress(b']'))
    parts.append(packer.flush())
    return b''.join(parts)


def test_zlib_bomb_is_refused():
    bomb = zlib_bomb(p.MAX_INFLATED_BYTES + (4 << 20))
    assert len(bomb) < p.MAX_PAYLOAD_BYTES // 100       # tiny on the wire
    with pytest.raises(ProtocolError) as info:
        p.decode_payload(bomb, p.ENCODING_ZLIB)
    assert 'inflates to more than' in str(info.value)
    with pytest.raises(ProtocolError):
        p.decode_records(bomb, p.ENCODING_ZLIB)


def test_large_but_allowed_inflation_is_fine():
    payload = zlib_bomb(4 << 20)            # 4 MiB of whitespace is a valid empty list
    assert p.decode_payload(payload, p.ENCODING_ZLIB) == []


@pytest.mark.parametrize('payload', [b'not zlib at all', b'', b'x\x9c\x00\x01'])
def test_corrupt_zlib_is_refused(payload):
    with pytest.raises(ProtocolError):
        p.decode_records(payload, p.ENCODING_ZLIB)


@pytest.mark.parametrize('payload', [b'', b'{', b'[1,', b'{"a":}', b'\xff\xfe', b'NaNx',
                                     b'hello', b"{'dateTime': 1}"])
@pytest.mark.parametrize('encoding', [None, p.ENCODING_JSON])
def test_non_json_is_refused(payload, encoding):
    with pytest.raises(ProtocolError) as info:
        p.decode_records(payload, encoding)
    assert 'not JSON' in str(info.value)


def test_non_json_inside_zlib_is_refused():
    with pytest.raises(ProtocolError):
        p.decode_records(zlib.compress(b'\x00\x01garbage'), p.ENCODING_ZLIB)


@pytest.mark.parametrize('encoding', ['gzip', 'zlib', 'JSON', 'zlib+msgpack', ''])
def test_unknown_encoding_is_refused(encoding):
    with pytest.raises(ProtocolError) as info:
        p.decode_payload(b'[]', encoding)
    assert 'encoding' in str(info.value)


@pytest.mark.parametrize('encoding', [None, p.ENCODING_JSON, p.ENCODING_ZLIB])
def test_oversized_payload_is_refused(encoding):
    payload = b' ' * (p.MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ProtocolError) as info:
        p.decode_payload(payload, encoding)
    assert 'too large' in str(info.value)


def test_payload_at_the_limit_is_read():
    payload = b'[' + b' ' * (p.MAX_PAYLOAD_BYTES - 2) + b']'
    assert p.decode_payload(payload, p.ENCODING_JSON) == []


@pytest.mark.parametrize('payload', [b'42', b'"text"', b'null', b'true', b'1.5'])
def test_non_list_non_object_payload_is_refused(payload):
    assert p.decode_payload(payload, None) == json.loads(payload)
    with pytest.raises(ProtocolError) as info:
        p.decode_records(payload, None)
    assert 'not a list of records' in str(info.value)


@pytest.mark.parametrize('payload', [b'[1]', b'[[]]', b'[null]', b'["x"]'])
def test_list_of_non_objects_is_refused(payload):
    with pytest.raises(ProtocolError):
        p.decode_records(payload, None)


def test_one_bad_record_refuses_the_batch():
    good = many_records(3)
    bad = dict(good[1], outTemp='hot')
    with pytest.raises(ProtocolError):
        p.decode_records(p.encode_json([good[0], bad, good[2]]), None)


def test_nan_literal_in_payload_is_refused():
    payload = b'[{"dateTime": 1600000000, "usUnits": 1, "interval": 5, "outTemp": NaN}]'
    with pytest.raises(ProtocolError):
        p.decode_records(payload, None)


@pytest.mark.parametrize('encoding', [None, p.ENCODING_ZLIB])
def test_deeply_nested_json_is_a_protocol_error(encoding):
    payload = b'[' * 100_000 + b']' * 100_000
    if encoding:
        payload = zlib.compress(payload)
    with pytest.raises(ProtocolError):
        p.decode_records(payload, encoding)


def test_huge_integer_in_payload_is_a_protocol_error():
    payload = b'[{"dateTime": 1600000000, "usUnits": 1, "interval": 5, "outTemp": 1' \
        + b'0' * 400 + b'}]'
    with pytest.raises(ProtocolError):
        p.decode_records(payload, None)


def test_too_long_integer_literal_is_a_protocol_error():
    # Python refuses int literals of more than 4300 digits; that must still be ProtocolError
    with pytest.raises(ProtocolError):
        p.decode_records(b'[' + b'1' * 5000 + b']', None)


# ---------------------------------------------------------------------------------------------
#  parse_since
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('payload, expected', [
    (b'0', 0), (b'1700000000', 1700000000), (b' 1700000000 ', 1700000000),
    (b'1700000000\n', 1700000000), (b'\t42\r\n', 42), (b'', 0), (b'   ', 0), (b'None', 0),
    (b'null', 0), (b'1700000000.0', 1700000000),
])
def test_parse_since(payload, expected):
    assert p.parse_since(payload) == expected
    assert type(p.parse_since(payload)) is int


@pytest.mark.parametrize('payload', [b'-1', b'-1700000000', b' -5 '])
def test_parse_since_negative(payload):
    with pytest.raises(ProtocolError) as info:
        p.parse_since(payload)
    assert 'negative' in str(info.value)


@pytest.mark.parametrize('payload', [b'abc', b'12abc', b'1 2', b'\xff', b'nan', b'{}', b'0x10',
                                     b'\xc3\xa9', b'[1]'])
def test_parse_since_garbage(payload):
    with pytest.raises(ProtocolError) as info:
        p.parse_since(payload)
    assert 'since' in str(info.value)


@pytest.mark.parametrize('payload', [b'inf', b'-inf', b'1e400', b'Infinity'])
def test_parse_since_infinity(payload):
    with pytest.raises(ProtocolError):
        p.parse_since(payload)


# ---------------------------------------------------------------------------------------------
#  Properties
# ---------------------------------------------------------------------------------------------

def test_user_properties_from_paho_properties():
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [('data_binding', 'weewx/wx_binding'), ('protocol', '2'),
                          ('seq', '0')]
    assert p.user_properties(props) == {'data_binding': 'weewx/wx_binding', 'protocol': '2',
                                        'seq': '0'}


def test_user_properties_first_value_wins():
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [('op', 'records'), ('op', 'digest')]
    props.UserProperty = ('node', 'a')
    assert p.user_properties(props) == {'op': 'records', 'node': 'a'}


def test_user_properties_survive_the_wire_encoding():
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [('data_binding', 'weewx/wx_binding'), ('end', '1')]
    props.CorrelationData = b'abc'
    received = Properties(PacketTypes.PUBLISH)
    received.unpack(props.pack())
    assert p.user_properties(received) == {'data_binding': 'weewx/wx_binding', 'end': '1'}


def test_user_properties_without_any():
    assert p.user_properties(None) == {}
    assert p.user_properties(Properties(PacketTypes.PUBLISH)) == {}
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = b'xyz'
    assert p.user_properties(props) == {}


@pytest.mark.parametrize('props, expected', [
    ({'limit': '10'}, 10), ({'limit': '0'}, 0), ({'limit': ' 7 '}, 7), ({}, None),
    ({'limit': None}, None),
])
def test_int_property(props, expected):
    assert p.int_property(props, 'limit') == expected


def test_int_property_default():
    assert p.int_property({}, 'limit', 5000) == 5000
    assert p.int_property({'limit': '3'}, 'limit', 5000) == 3


@pytest.mark.parametrize('value', ['abc', '1.5', '', '0x10', 'inf', 'nan', '1e3', '[1]'])
def test_int_property_not_an_integer(value):
    with pytest.raises(ProtocolError) as info:
        p.int_property({'limit': value}, 'limit')
    assert 'limit' in str(info.value) and 'not an integer' in str(info.value)


def test_int_property_minimum():
    with pytest.raises(ProtocolError) as info:
        p.int_property({'seq': '-1'}, 'seq')
    assert 'less than 0' in str(info.value)
    with pytest.raises(ProtocolError):
        p.int_property({'limit': '0'}, 'limit', 100, 1)
    assert p.int_property({'limit': '1'}, 'limit', 100, 1) == 1
    assert p.int_property({'prev': '-5'}, 'prev', None, -10) == -5


def test_constants_are_sane():
    assert p.PROTOCOL == '2'
    assert set(p.OPERATIONS) == {'records', 'digest', 'ack'}
    assert p.MAX_INFLATED_BYTES > p.MAX_PAYLOAD_BYTES
    assert not math.isinf(p.MAX_FUTURE_SECONDS)
