"""Property tests: whatever arrives over the broker, decoding either yields validated records
or raises ProtocolError — never any other exception (promise 6, "Safe input").

Integers reach beyond what a float can hold (INT_BOUND), where a float conversion or a sum
of them overflows (test_protocol.py::test_huge_integer_* pin the same cases one by one).
Nesting depth is bounded by st.recursive; the deep-nesting bug is pinned by
test_protocol.py::test_deeply_nested_json_is_a_protocol_error.
"""

import json
import math
import os
import time
import zlib

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from user.mqttreplicate import protocol as p
from user.mqttreplicate.protocol import ProtocolError

MAX_EXAMPLES = int(os.environ.get('FUZZ_EXAMPLES', '300'))
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

INT_BOUND = 2 ** 1100          # beyond what a float holds (sum() of them overflows)
NOW = int(time.time())

json_scalars = (st.none() | st.booleans()
                | st.integers(min_value=-INT_BOUND, max_value=INT_BOUND)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30)

good_names = st.from_regex(r'\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z')
good_values = (st.none() | st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False))
good_date_times = (st.integers(min_value=1, max_value=NOW + 86000)
                   | st.integers(min_value=1, max_value=NOW).map(float))
good_intervals = (st.integers(min_value=1, max_value=1440)
                  | st.floats(min_value=0.001, max_value=1e6))

bad_names = (st.sampled_from(['x; DROP TABLE archive', 'a b', '', 'x"', "x'", 'a-b', 'a' * 65,
                              '"; DELETE FROM archive; --', 'é', 'x\x00'])
             | st.text(max_size=70))
bad_date_times = (st.integers(min_value=-INT_BOUND, max_value=INT_BOUND)
                  | st.integers(min_value=NOW + 86000, max_value=NOW + 2 * 86400)
                  | st.floats(allow_nan=True, allow_infinity=True) | json_scalars)
bad_unit_systems = (st.sampled_from([0, 2, 18, True, False, 1.0, 16.5, '1', None, [1]])
                    | json_scalars)
bad_values = (st.booleans() | st.integers(min_value=-INT_BOUND, max_value=INT_BOUND)
              | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5)
              | st.lists(st.integers(), max_size=2)
              | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
MUTATIONS = ('none', 'none', 'none', 'dateTime', 'usUnits', 'interval', 'name', 'value', 'drop',
             'many')


@st.composite
def record_like(draw):
    """A valid record, then (most of the time) one hostile change, so that every check of
    validate_record is reached and plenty of records are accepted too."""
    rec = {'dateTime': draw(good_date_times), 'usUnits': draw(st.sampled_from([1, 16, 17])),
           'interval': draw(good_intervals)}
    rec.update(draw(st.dictionaries(good_names, good_values, max_size=8)))
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation in ('dateTime', 'usUnits', 'interval'):
        rec[mutation] = draw({'dateTime': bad_date_times, 'usUnits': bad_unit_systems,
                              'interval': bad_values}[mutation])
    elif mutation == 'name':
        rec[draw(bad_names)] = draw(good_values)
    elif mutation == 'value':
        rec[draw(good_names)] = draw(bad_values)
    elif mutation == 'drop':
        del rec[draw(st.sampled_from(['dateTime', 'usUnits', 'interval']))]
    elif mutation == 'many':
        extra = draw(st.integers(min_value=p.MAX_RECORD_KEYS - 3, max_value=p.MAX_RECORD_KEYS))
        rec.update(('c%d' % i, i) for i in range(extra))
    return rec


def check_records(records):
    """The invariants of anything decode_records returns."""
    assert isinstance(records, list)
    for rec in records:
        assert isinstance(rec, dict)
        assert type(rec['dateTime']) is int and rec['dateTime'] > 0
        assert rec['dateTime'] <= time.time() + p.MAX_FUTURE_SECONDS
        assert rec['usUnits'] in p.KNOWN_UNIT_SYSTEMS and not isinstance(rec['usUnits'], bool)
        assert isinstance(rec['interval'], (int, float)) and rec['interval'] > 0
        assert not isinstance(rec['interval'], bool) and math.isfinite(rec['interval'])
        assert len(rec) <= p.MAX_RECORD_KEYS
        for key, value in rec.items():
            assert isinstance(key, str) and 0 < len(key) <= p.MAX_KEY_LENGTH
            assert all(c.isalnum() or c == '_' for c in key)
            assert not any(c in key for c in ' ;"\'-(),.*')
            assert value is None or (isinstance(value, (int, float))
                                     and not isinstance(value, bool) and not math.isnan(value))


def decode_or_refuse(payload, encoding):
    try:
        records = p.decode_records(payload, encoding)
    except ProtocolError:
        return None
    check_records(records)
    return records


@FUZZ
@given(payload=st.binary(max_size=512),
       encoding=st.sampled_from([None, p.ENCODING_JSON, p.ENCODING_ZLIB]))
def test_decode_records_arbitrary_bytes(payload, encoding):
    decode_or_refuse(payload, encoding)


@FUZZ
@given(payload=st.binary(max_size=512))
def test_decode_records_arbitrary_bytes_compressed(payload):
    decode_or_refuse(zlib.compress(payload), p.ENCODING_ZLIB)


@FUZZ
@given(encoding=st.one_of(st.none(), st.text(max_size=12)), payload=st.binary(max_size=64))
def test_decode_records_arbitrary_encoding(encoding, payload):
    decode_or_refuse(payload, encoding)


@FUZZ
@given(value=json_values, compress=st.booleans())
def test_decode_records_arbitrary_json(value, compress):
    payload = json.dumps(value).encode('utf-8')        # NaN/Infinity literals included
    if compress:
        decode_or_refuse(zlib.compress(payload), p.ENCODING_ZLIB)
    else:
        decode_or_refuse(payload, p.ENCODING_JSON)


@FUZZ
@given(records=st.lists(record_like(), max_size=4) | record_like(), compress=st.booleans())
def test_decode_records_record_shaped_json(records, compress):
    payload = json.dumps(records).encode('utf-8')
    encoding = p.ENCODING_JSON
    if compress:
        payload, encoding = zlib.compress(payload), p.ENCODING_ZLIB
    decoded = decode_or_refuse(payload, encoding)
    if decoded is not None:
        originals = records if isinstance(records, list) else [records]
        assert len(decoded) == len(originals)


def decode_each(records):
    """(valid records, count refused) of records decoded one by one (validate_record)."""
    valid, refused = [], 0
    for rec in records:
        try:
            valid.append(p.validate_record(dict(rec)))
        except ProtocolError:
            refused += 1
    return valid, refused


@FUZZ
@given(records=st.lists(record_like(), min_size=1, max_size=5),
       layout=st.sampled_from([p.LAYOUT_COLUMNS, p.LAYOUT_PACKED]), compress=st.booleans())
def test_column_major_batches_keep_and_refuse_what_validate_record_does(records, layout,
                                                                         compress):
    """Column-major batches are checked a column at a time, then record by record only if
    that finds anything: the records kept and refused are exactly those validate_record
    keeps and refuses (the whole-column check is never less strict), in either layout."""
    columns = p.Columns.of([{k: v for k, v in rec.items() if v is not None} for rec in records])
    if layout == p.LAYOUT_PACKED:
        # in the packed layout NaN is NULL by definition: records without NaN only
        hypothesis.assume(not any(isinstance(v, float) and math.isnan(v)
                                  for rec in records for v in rec.values()))
        try:
            payload, encoding = p.encode_batch(columns, compress, pack=True)
        except ValueError:      # not packed, and not JSON either (an infinity): not sent
            hypothesis.assume(False)
        if encoding not in p.PACKED_ENCODINGS:
            layout = p.LAYOUT_COLUMNS          # what the responder says of such a batch
    else:
        payload = json.dumps(columns.to_json()).encode('utf-8')    # NaN literals included
        payload, encoding = (zlib.compress(payload), p.ENCODING_ZLIB) if compress \
            else (payload, p.ENCODING_JSON)
    try:
        kept, refused, sent = p.decode_batch(payload, encoding, layout)
    except ProtocolError as e:
        # refused whole only for its column names (the object layout refuses each record)
        assert 'plain name' in str(e) or 'too wide' in str(e), e
        return
    valid, bad = decode_each(columns.records())
    assert isinstance(kept, p.Columns) and sent == len(records)
    assert kept.records() == [{k: v for k, v in r.items() if v is not None} for r in valid]
    assert len(refused) == bad
    check_records(kept.records())
    # the same types too (1 and 1.0 are equal): a REAL stays a REAL
    assert [[(k, type(v)) for k, v in r.items()] for r in kept.records()] == \
        [[(k, type(v)) for k, v in r.items() if v is not None] for r in valid]


@FUZZ
@given(payload=st.binary(max_size=512), compress=st.booleans())
def test_decode_packed_arbitrary_bytes(payload, compress):
    encoding = p.ENCODING_PACKED
    if compress:
        payload, encoding = zlib.compress(payload), p.ENCODING_ZLIB_PACKED
    try:
        kept, _, _ = p.decode_batch(payload, encoding, p.LAYOUT_PACKED)
    except ProtocolError:
        return
    check_records(kept.records())


hashable_keys = (st.text(max_size=20) | st.integers() | st.none() | st.booleans()
                 | st.floats(allow_nan=False) | st.tuples(st.integers()) | st.binary(max_size=4))
python_values = st.recursive(
    json_scalars | st.binary(max_size=4) | st.complex_numbers() | st.tuples(st.integers()),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10)


@FUZZ
@given(rec=st.dictionaries(hashable_keys, python_values, max_size=8))
def test_validate_record_arbitrary_dicts(rec):
    try:
        result = p.validate_record(dict(rec))
    except ProtocolError:
        return
    check_records([result])


@FUZZ
@given(rec=record_like())
def test_validate_record_record_like_dicts(rec):
    try:
        result = p.validate_record(dict(rec))
    except ProtocolError:
        return
    check_records([result])


@FUZZ
@given(value=st.one_of(json_values, st.binary(max_size=16), st.integers(), st.text()))
def test_validate_record_non_dicts(value):
    if isinstance(value, dict):
        return
    try:
        p.validate_record(value)
    except ProtocolError:
        return
    raise AssertionError('validate_record accepted %r' % (value,))


@FUZZ
@given(payload=st.binary(max_size=32)
       | st.from_regex(r'\A\s*-?[0-9]{1,25}(\.[0-9]{0,5})?\s*\Z').map(str.encode))
def test_parse_since_is_an_int_or_protocol_error(payload):
    if _is_infinite(payload):
        return      # known bug, pinned by test_protocol.py::test_parse_since_infinity
    try:
        since = p.parse_since(payload)
    except ProtocolError:
        return
    assert type(since) is int and since >= 0


def _is_infinite(payload):
    try:
        return math.isinf(float(payload.decode('ascii').strip()))
    except (UnicodeDecodeError, ValueError):
        return False
