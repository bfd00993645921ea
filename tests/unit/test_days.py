"""The primary's daily summaries on the wire (summaries.DayRows and the messages that carry
them) and in the digest (digest_days, 4-element digest entries, verify.differences).

DayRows travel in two ways: as page messages of their own (kind=days, count 0, before the
page's last message) and as the `days` user property of a live record (base64 of zlib of
the JSON). Both are decoded from what a broker delivers (tests.unit.test_messages builds the
envelopes) and validated: a bad DayRows is refused with a message naming what is wrong, and
never refuses the records that came with it. No broker, no network, no database.
"""

import base64
import copy
import dataclasses
import hashlib
import json
import random
import time
import zlib

import pytest

from tests.unit.test_messages import (CORRELATION, KEY, NODE, REQUEST_TOPIC, ARCHIVE_TOPIC,
                                      envelope, raw, record, wire_pairs)
from user.mqttreplicate import protocol as p
from user.mqttreplicate import messages
from user.mqttreplicate import summaries
from user.mqttreplicate import verify
from user.mqttreplicate.protocol import ProtocolError
from user.mqttreplicate.messages import (Batch, DigestReply, DigestRequest, LiveRecord, Page,
                                         decode_answer, decode_request)
from user.mqttreplicate.summaries import DayRows

DAY = 86400
T0 = 1700000000 - 1700000000 % DAY          # a day's start (UTC)
US, METRIC = 0x01, 0x10
SCALAR = ('dateTime', 'min', 'mintime', 'max', 'maxtime', 'sum', 'count', 'wsum', 'sumtime')
WIND = SCALAR + ('max_dir', 'xsum', 'ysum', 'dirsumtime', 'squaresum', 'wsquaresum')


def day_row(name, day, width, offset=0.0):
    """A plausible archive_day_<name> row of day `day` (a day's start), width values."""
    base = sum(map(ord, name)) % 50 + offset
    values = [day, base - 5.25, day + 3600, base + 7.5, day + 50400, base * 288, 288,
              base * 86400, 86400] + [base + k / 4 for k in range(width - len(SCALAR))]
    return tuple(values[:width])


def day_rows(days=3, first=T0, types=('barometer', 'outTemp', 'rain'), through=None,
             units=US, version='4.0', offset=0.0):
    """DayRows of `days` whole days from first, every type with a row each day (wind with
    the wind table's columns)."""
    tables = {}
    for name in types:
        columns = WIND if name == 'wind' else SCALAR
        tables[name] = (columns, [day_row(name, first + d * DAY, len(columns), offset)
                                  for d in range(days)])
    return DayRows(units, version, first, first + days * DAY, tables, through)


def as_json(rows):
    """rows.to_json() as it arrives: through a JSON text."""
    return json.loads(json.dumps(rows.to_json()))


def rejected(match, obj):
    with pytest.raises(ProtocolError, match=match):
        DayRows.from_json(obj)


# ---------------------------------------------------------------------------------------------
#  DayRows: round trips
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('through', [None, T0 + 2 * DAY + 600])
def test_json_round_trip(through):
    rows = day_rows(types=('barometer', 'outTemp', 'wind'), through=through)
    assert DayRows.from_json(as_json(rows)) == rows
    decoded = DayRows.from_json(as_json(rows))
    assert isinstance(decoded.tables['wind'][0], tuple)
    assert all(isinstance(row, tuple) for row in decoded.tables['wind'][1])
    assert decoded.types == frozenset({'barometer', 'outTemp', 'wind'})


def test_json_form():
    rows = day_rows(days=1, types=('outTemp',))
    assert rows.to_json() == {
        'units': US, 'version': '4.0', 'first': T0, 'stop': T0 + DAY, 'through': None,
        'tables': {'outTemp': {'columns': list(SCALAR),
                               'rows': [list(rows.tables['outTemp'][1][0])]}}}


def test_a_type_without_rows_and_none_values_round_trip():
    rows = DayRows(METRIC, '4.0', T0, T0 + DAY, {
        'outTemp': (SCALAR, [(T0, None, None, None, None, 0.0, 0, 0.0, 0)]),
        'hail': (SCALAR, [])})
    assert DayRows.from_json(as_json(rows)) == rows
    assert rows.types == frozenset({'outTemp', 'hail'})


def test_an_empty_range_of_days_is_valid():
    rows = DayRows(US, '4.0', T0, T0, {'outTemp': (SCALAR, [])})
    assert DayRows.from_json(as_json(rows)) == rows


def test_property_round_trip():
    rows = day_rows(types=('barometer', 'outTemp', 'wind'), through=T0 + 2 * DAY + 300)
    text = rows.encode_property()
    assert isinstance(text, str) and text.isascii()
    # base64 of zlib of the compact JSON
    assert json.loads(zlib.decompress(base64.b64decode(text))) == as_json(rows)
    assert DayRows.decode_property(text) == rows


def test_property_larger_than_the_limit_is_not_sent(monkeypatch):
    rows = day_rows(days=2)
    size = len(rows.encode_property())
    monkeypatch.setattr(summaries, 'MAX_DAYS_PROPERTY', size)
    assert rows.encode_property() is not None              # at the limit: sent
    monkeypatch.setattr(summaries, 'MAX_DAYS_PROPERTY', size - 1)
    assert rows.encode_property() is None


def test_property_of_incompressible_rows_is_not_sent():
    rng = random.Random(7)
    days = 2000
    tables = {'t%d' % k: (SCALAR, [(T0 + d * DAY,) + tuple(rng.random() for _ in SCALAR[1:])
                                   for d in range(days)]) for k in range(2)}
    rows = DayRows(US, '4.0', T0, T0 + days * DAY, tables)
    assert rows.encode_property() is None


@pytest.mark.parametrize('text, word', [
    ('not base64!', 'base64'),
    ('ab\u00e9c', 'base64'),                                          # not even ASCII
    (base64.b64encode(b'not zlib').decode(), 'inflate'),
    (base64.b64encode(zlib.compress(b'{nope')).decode(), 'JSON'),
    (base64.b64encode(zlib.compress(b'[1, 2]')).decode(), 'not an object'),
])
def test_bad_property(text, word):
    with pytest.raises(ProtocolError, match=word):
        DayRows.decode_property(text)


# ---------------------------------------------------------------------------------------------
#  DayRows: validation
# ---------------------------------------------------------------------------------------------

def test_the_base_of_the_rejections_is_valid():
    assert DayRows.from_json(good()) == day_rows()


def good():
    return as_json(day_rows())


def changed(path, value):
    """good() with the value at path (keys and indexes) replaced (or removed: value=KeyError)."""
    obj = good()
    *parents, last = path
    target = obj
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return obj


@pytest.mark.parametrize('obj, typename', [([], 'list'), ('x', 'str'), (None, 'NoneType'),
                                           (5, 'int')])
def test_not_an_object(obj, typename):
    rejected('daily summaries are a %s, not an object' % typename, obj)


@pytest.mark.parametrize('units', [2, 0, 99, True, '1', None, [1], KeyError])
def test_bad_units(units):
    rejected('usUnits .* is not a known unit system', changed(['units'], units))


def test_every_known_unit_system_is_accepted():
    for units in p.KNOWN_UNIT_SYSTEMS:
        assert DayRows.from_json(changed(['units'], units)).units == units


@pytest.mark.parametrize('version', [4, None, '', 'x' * 17, ['4.0'], KeyError])
def test_bad_version(version):
    rejected('version .* is not a version', changed(['version'], version))


@pytest.mark.parametrize('field, value', [
    ('first', T0 + 3 * DAY + 1),                 # after stop
    ('first', -1), ('first', '0'), ('first', True), ('first', 1.5), ('first', None),
    ('stop', None), ('stop', str(T0 + 3 * DAY)), ('stop', 2 ** 70),
    ('first', T0 + 3 * DAY - summaries.MAX_DAYS_SPAN - 1),     # too many days at once
])
def test_bad_range(field, value):
    rejected('days .* to .* are not a range of days', changed([field], value))


def test_the_longest_range_is_accepted():
    obj = changed(['first'], T0 + 3 * DAY - summaries.MAX_DAYS_SPAN)
    assert DayRows.from_json(obj).first == T0 + 3 * DAY - summaries.MAX_DAYS_SPAN


@pytest.mark.parametrize('through', ['5', -1, 1.5, True, [T0]])
def test_bad_through(through):
    rejected('through .* is not a time', changed(['through'], through))


@pytest.mark.parametrize('tables', [None, [], 'outTemp', 5,
                                    {'t%d' % k: {'columns': ['dateTime', 'max'], 'rows': []}
                                     for k in range(p.MAX_RECORD_KEYS + 1)}])
def test_bad_tables(tables):
    rejected('tables is not an object of at most %d types' % p.MAX_RECORD_KEYS,
             changed(['tables'], tables))


@pytest.mark.parametrize('name', ['outTemp; DROP TABLE archive', 'out temp', '', 'x' * 65,
                                  'temp\u00e9', 'a-b', '../archive'])
def test_hostile_type_name(name):
    obj = good()
    obj['tables'][name] = obj['tables'].pop('outTemp')
    rejected('is not a plain name', obj)


@pytest.mark.parametrize('column', ['max) FROM archive; --', 'min time', '', 'x' * 65, 7, None])
def test_hostile_column_name(column):
    rejected('is not a plain name', changed(['tables', 'outTemp', 'columns', 3], column))


@pytest.mark.parametrize('table', [
    None, [], 'x',
    {'rows': []},                                               # no columns
    {'columns': list(SCALAR)},                                  # no rows
    {'columns': list(SCALAR), 'rows': {}},
    {'columns': 'dateTime,min', 'rows': []},
    {'columns': ['dateTime'], 'rows': []},                      # nothing but dateTime
    {'columns': ['min'] + list(SCALAR), 'rows': []},            # dateTime not first
    {'columns': list(SCALAR[1:]) + ['dateTime'], 'rows': []},
    {'columns': ['dateTime'] + ['c%d' % k for k in range(summaries.MAX_DAY_COLUMNS)], 'rows': []},
], ids=['none', 'list', 'str', 'no-columns', 'no-rows', 'rows-not-a-list', 'columns-a-str',
        'only-dateTime', 'dateTime-not-first', 'dateTime-last', 'too-many-columns'])
def test_bad_table(table):
    rejected(r'daily summaries of outTemp: not \{"columns": \["dateTime", \.\.\.\], '
             r'"rows": \[\.\.\.\]\}', changed(['tables', 'outTemp'], table))


def test_the_widest_table_is_accepted():
    columns = ['dateTime'] + ['c%d' % k for k in range(summaries.MAX_DAY_COLUMNS - 1)]
    obj = changed(['tables', 'outTemp'], {'columns': columns,
                                          'rows': [[T0] + [1.5] * (len(columns) - 1)]})
    assert len(DayRows.from_json(obj).tables['outTemp'][0]) == summaries.MAX_DAY_COLUMNS


@pytest.mark.parametrize('row', [
    lambda row: row[:-1], lambda row: row + [1.0], lambda row: [], lambda row: 5,
    lambda row: {'dateTime': row[0]}, lambda row: None],
    ids=['short', 'long', 'empty', 'number', 'object', 'null'])
def test_row_of_the_wrong_width(row):
    obj = good()
    rows = obj['tables']['rain']['rows']
    rows[1] = row(rows[1])
    rejected('daily summaries of rain: a row is not %d values' % len(SCALAR), obj)


@pytest.mark.parametrize('day', [T0 - DAY, T0 - 1, T0 + 3 * DAY, T0 + 10 * DAY, -5, '5',
                                 float(T0), True, None])
def test_day_outside_the_range(day):
    rejected(r'daily summaries of outTemp: day .* is not in %d to %d' % (T0, T0 + 3 * DAY),
             changed(['tables', 'outTemp', 'rows', 2, 0], day))


def test_days_at_the_edges_of_the_range():
    obj = changed(['tables', 'outTemp', 'rows', 2, 0], T0 + 3 * DAY - 1)
    assert DayRows.from_json(obj).tables['outTemp'][1][2][0] == T0 + 3 * DAY - 1


@pytest.mark.parametrize('value', ['12.5', True, False, [1], {'v': 1}, 'Infinity',
                                   float('nan'), 2 ** 70, -2 ** 70])
def test_value_that_is_not_a_number(value):
    rejected(r'daily summaries of barometer: value .* is not a number',
             changed(['tables', 'barometer', 'rows', 0, 4], value))


@pytest.mark.parametrize('value', [None, 0, -40, 1.5e300, -0.0, 2 ** 62, float('inf'),
                                   float('-inf')])
def test_values_that_are_numbers_or_null(value):
    obj = changed(['tables', 'barometer', 'rows', 0, 4], value)
    assert DayRows.from_json(obj).tables['barometer'][1][0][4] == value


# ---------------------------------------------------------------------------------------------
#  DayRows: parts of days
# ---------------------------------------------------------------------------------------------

def test_only_keeps_the_days_asked_for_and_every_type():
    rows = day_rows(days=4)
    middle = rows.only(T0 + DAY, T0 + 3 * DAY)
    assert (middle.first, middle.stop) == (T0 + DAY, T0 + 3 * DAY)
    assert middle.types == rows.types
    for name, (columns, kept) in middle.tables.items():
        assert columns == rows.tables[name][0]
        assert kept == rows.tables[name][1][1:3]
    assert (middle.units, middle.version, middle.through) == (rows.units, rows.version,
                                                              rows.through)
    assert rows.tables['outTemp'][1] == day_rows(days=4).tables['outTemp'][1]   # unchanged


def test_only_is_cut_at_the_range_it_has():
    rows = day_rows(days=2)
    assert rows.only(T0 - 5 * DAY, T0 + 9 * DAY) == rows
    after = rows.only(T0 + 5 * DAY, T0 + 9 * DAY)
    assert after.first == after.stop and all(not r for _, r in after.tables.values())
    before = rows.only(T0 - 5 * DAY, T0 - DAY)
    assert before.first <= before.stop and all(not r for _, r in before.tables.values())
    assert DayRows.from_json(as_json(rows.only(T0 + DAY, T0 + DAY))).tables['rain'][1] == []


def test_merge_of_parts_is_the_whole():
    rows = day_rows(days=4, through=None)
    parts = [rows.only(T0 + 2 * DAY, T0 + 4 * DAY), rows.only(T0, T0 + DAY),
             rows.only(T0 + DAY, T0 + 2 * DAY)]               # in any order
    assert DayRows.merge(parts) == rows
    assert DayRows.merge([rows]) == rows
    # the parts themselves are not changed by the merge
    assert parts[1] == rows.only(T0, T0 + DAY)


def test_merge_of_parts_with_a_type_missing_in_one():
    rows = day_rows(days=2)
    second = rows.only(T0 + DAY, T0 + 2 * DAY)
    second = DayRows(second.units, second.version, second.first, second.stop,
                     {k: v for k, v in second.tables.items() if k != 'rain'})
    merged = DayRows.merge([rows.only(T0, T0 + DAY), second])
    assert merged.tables['rain'][1] == rows.tables['rain'][1][:1]
    assert merged.tables['outTemp'] == rows.tables['outTemp']


@pytest.mark.parametrize('parts', [
    [],
    [(0, 1), (2, 3)],                   # a day missing in between
    [(0, 2), (1, 3)],                   # overlapping
], ids=['none', 'gap', 'overlap'])
def test_merge_with_a_gap_is_none(parts):
    rows = day_rows(days=3)
    assert DayRows.merge([rows.only(T0 + a * DAY, T0 + b * DAY) for a, b in parts]) is None


# ---------------------------------------------------------------------------------------------
#  DayRows: split into messages
# ---------------------------------------------------------------------------------------------

def parts_of(split):
    return [DayRows.from_json(p.decode_payload(payload, encoding)) for payload, encoding in split]


@pytest.mark.parametrize('compress, encoding', [(False, 'json'), (True, 'zlib+json')])
def test_split_that_fits_is_one_message(compress, encoding):
    rows = day_rows(days=5)
    split = rows.split(100000, compress)
    assert len(split) == 1 and split[0][1] == encoding
    assert parts_of(split) == [rows]


@pytest.mark.parametrize('compress', [False, True])
def test_split_halves_until_each_part_fits(compress):
    rows = day_rows(days=9, types=('barometer', 'outTemp', 'rain', 'wind'))
    whole = len(p.encode_batch(rows.to_json(), compress)[0])
    one_day = max(len(p.encode_batch(rows.only(d, d + DAY).to_json(), compress)[0])
                  for d in range(T0, T0 + 9 * DAY, DAY))
    max_bytes = one_day + (whole - one_day) // 4
    split = rows.split(max_bytes, compress)
    assert split is not None and len(split) > 2
    assert all(len(payload) <= max_bytes for payload, _ in split)
    parts = parts_of(split)
    # in the order of their days, one range without a gap, nothing lost
    assert [part.first for part in parts] == sorted(part.first for part in parts)
    assert all(a.stop == b.first for a, b in zip(parts, parts[1:]))
    assert DayRows.merge(parts) == rows
    # at a day per message at most, it fits too
    assert DayRows.merge(parts_of(rows.split(one_day, compress))) == rows


def biggest_type(rows):
    """The size of the largest message of one type of one day."""
    day = rows.only(T0, T0 + DAY)
    return max(len(p.encode_json(dataclasses.replace(day, tables={name: table}).to_json()))
               for name, table in day.tables.items())


def test_the_same_part_twice_merges_as_once():
    rows = day_rows(days=3)
    assert DayRows.merge([rows.only(T0, T0 + DAY)] * 2) == rows.only(T0, T0 + DAY)


def test_split_is_none_when_a_single_type_of_a_single_day_never_fits():
    rows = day_rows(days=4)
    one_type = biggest_type(rows)
    assert rows.split(one_type - 1, False) is None
    assert day_rows(days=1).split(one_type - 1, False) is None


# ---------------------------------------------------------------------------------------------
#  Pages with daily summaries
# ---------------------------------------------------------------------------------------------

def records(n, start=T0, step=300):
    return [record(start + (i + 1) * step, outTemp=10.0 + i / 8) for i in range(n)]


def decode_all(wires):
    return [decode_answer(envelope(w, correlation=CORRELATION)) for w in wires]


@pytest.mark.parametrize('compress', [False, True])
def test_page_with_days_wire_format(compress):
    recs = records(7)
    rows = day_rows(days=1)
    wires = Page(KEY, recs, True, recs[-1]['dateTime'], T0 + DAY, rows).encode(
        3, 100000, compress)
    encoding = 'zlib+json' if compress else 'json'
    assert len(wires) == 4
    assert [dict(wire_pairs(w)).get('kind') for w in wires] == [None, None, 'days', None]
    assert wire_pairs(wires[2]) == [('data_binding', KEY), ('protocol', '2'),
                                    ('encoding', encoding), ('seq', '2'), ('count', '0'),
                                    ('kind', 'days')]
    assert DayRows.from_json(p.decode_payload(wires[2].payload, encoding)) == rows
    # the records' messages are as without days, the last one renumbered after the days'
    assert wire_pairs(wires[3]) == [
        ('data_binding', KEY), ('protocol', '2'), ('encoding', encoding), ('seq', '3'),
        ('count', '1'), ('end', '1'), ('more', '1'), ('last', str(recs[-1]['dateTime'])),
        ('newest', str(T0 + DAY))]
    assert [p.decode_payload(w.payload, encoding) for w in (wires[0], wires[1], wires[3])] \
        == [recs[0:3], recs[3:6], recs[6:]]


@pytest.mark.parametrize('compress', [False, True])
def test_page_with_days_round_trip(compress):
    recs = records(300)
    rows = day_rows(days=2, types=('barometer', 'outTemp', 'rain', 'wind'))
    one_day = len(p.encode_batch(rows.only(T0, T0 + DAY).to_json(), compress)[0])
    page = Page(KEY, recs, False, recs[-1]['dateTime'], T0 + 2 * DAY, rows)
    wires = page.encode(100, one_day, compress)           # a day a message
    batches = decode_all(wires)
    assert [b.seq for b in batches] == list(range(len(wires)))
    days = [b for b in batches if b.days is not None]
    assert days and batches[-1].days is None and batches[-1].end
    assert batches.index(days[0]) == len(batches) - 1 - len(days)     # just before the last
    for b in days:
        assert (b.records, b.end, b.more, b.last, b.rejected) == ([], False, False, None, ())
        assert b.sent == 0
    assert len(days) == 2 and DayRows.merge([b.days for b in days]) == rows
    assert [r for b in batches for r in b.records] == recs
    assert (batches[-1].more, batches[-1].last, batches[-1].newest) == \
        (False, recs[-1]['dateTime'], T0 + 2 * DAY)


def test_empty_page_with_days():
    rows = day_rows(days=1)
    wires = Page(KEY, [], False, T0 + DAY, T0 + DAY, rows).encode(100, 100000, False)
    assert len(wires) == 2
    first, last = decode_all(wires)
    assert first.days == rows and first.seq == 0
    assert last == Batch(KEY, [], 1, True, False, T0 + DAY, T0 + DAY)


def test_page_whose_days_never_fit_goes_without_them():
    recs = records(3)
    rows = day_rows(days=2)
    one_type = biggest_type(rows)
    wires = Page(KEY, recs, False, recs[-1]['dateTime'], 0, rows).encode(
        100, one_type - 1, False)
    assert [dict(wire_pairs(w)).get('kind') for w in wires] == [None]
    assert decode_all(wires)[0].records == recs


def test_page_without_days_has_no_days_messages():
    recs = records(3)
    wires = Page(KEY, recs, False, recs[-1]['dateTime'], 0).encode(1, 100000, False)
    assert all('kind' not in dict(wire_pairs(w)) for w in wires)
    assert all(b.days is None for b in decode_all(wires))


def days_pairs(seq=1, encoding='json', end=None):
    pairs = [('data_binding', KEY), ('protocol', '2'), ('encoding', encoding),
             ('seq', str(seq)), ('count', '0'), ('kind', 'days')]
    return pairs + ([('end', str(end))] if end is not None else [])


def test_days_message_decodes_to_a_batch_of_days():
    rows = day_rows(days=2)
    batch = Batch.decode(raw(p.encode_json(rows.to_json()), days_pairs(seq=4),
                             correlation=CORRELATION))
    assert batch == Batch(KEY, [], 4, days=rows)


@pytest.mark.parametrize('pairs', [
    [pair for pair in days_pairs() if pair[0] != 'seq'],
    days_pairs(end=1),
], ids=['without-seq', 'ending-a-page'])
def test_days_message_that_cannot_be_one(pairs):
    with pytest.raises(ProtocolError, match='daily summaries message'):
        Batch.decode(raw(p.encode_json(day_rows().to_json()), pairs))


@pytest.mark.parametrize('payload, word', [
    (b'{nope', 'JSON'),
    (b'[]', 'not an object'),
    (json.dumps(changed(['units'], 7)).encode(), 'usUnits'),
    (json.dumps(changed(['tables', 'outTemp', 'rows', 0, 3], 'hot')).encode(), 'not a number'),
])
def test_bad_days_message_leaves_the_days_out_and_the_page_goes_on(payload, word):
    batch = Batch.decode(raw(payload, days_pairs(seq=2)))
    assert batch.days is None and batch.records == [] and batch.seq == 2 and not batch.end
    assert len(batch.rejected) == 1 and word in batch.rejected[0]


def test_kind_days_on_protocol_1_is_a_record():
    rec = record()
    env = raw(p.encode_json(rec), [('data_binding', KEY), ('kind', 'days')])
    assert Batch.decode(env) == Batch(KEY, [rec], None, version=1)


def test_summaries_with_an_infinity_travel_as_they_are():
    """An overflowed sum (inf) in the primary's tables (SQLite keeps it): the page and the
    live record carry the summaries as they are, inf included."""
    rows = day_rows(days=1)
    columns, table = rows.tables['outTemp']
    bad = dataclasses.replace(rows, tables=dict(rows.tables, outTemp=(
        columns, [table[0][:-1] + (float('inf'),)])))
    assert DayRows.decode_property(bad.encode_property()) == bad
    recs = records(3)
    wires = Page(KEY, recs, False, recs[-1]['dateTime'], 0, bad).encode(10, 100000, True)
    batches = decode_all(wires)
    assert [rec for b in batches for rec in b.records] == recs
    assert DayRows.merge([b.days for b in batches if b.days is not None]) == bad


def test_a_bucket_fetch_takes_the_records_and_leaves_days_messages_aside():
    recs = records(10)
    fetch = verify.BucketFetch(T0, T0 + 2 * DAY)
    page = decode_all(Page(KEY, recs, False, recs[-1]['dateTime'], 0, day_rows(days=1)).encode(
        4, 100000, False))
    assert fetch.add(page) is False
    assert fetch.result() == recs


def test_a_days_fetch_asks_for_the_day_that_starts_in_its_bucket_and_takes_it():
    fetch = verify.DaysFetch(T0)
    day, last_day = verify.summaries_days(T0)
    assert day == last_day and T0 <= day < T0 + DAY
    assert (fetch.day, fetch.days, fetch.since, fetch.last) == (day, day + 1, day + 1, day + 1)
    rows = day_rows(days=3, first=day - DAY)
    page = decode_all(Page(KEY, [], False, day + 1, 0, rows).encode(4, 100000, False))
    assert fetch.add(page) is False
    got = fetch.result()
    assert got.first == day and all(row[0] == day for _, table in got.tables.values()
                                    for row in table)
    assert got.types == rows.types


def test_a_bucket_with_two_midnights_fetches_both_days(monkeypatch):
    """Europe/London, 2025-03-30: summer time begins at 01:00 UTC, so the UTC day of
    2025-03-30 holds the local midnights of the 30th (00:00 UTC) and the 31st (23:00 UTC)."""
    monkeypatch.setenv('TZ', 'Europe/London')
    time.tzset()
    try:
        bucket = 1743292800                          # 2025-03-30 00:00 UTC
        assert verify.summaries_days(bucket) == (bucket, bucket + 23 * 3600)
        fetch = verify.DaysFetch(bucket)
        assert (fetch.days, fetch.since) == (bucket + 1, bucket + 23 * 3600 + 1)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_days_fetch_refuses_an_answer_without_the_day_or_with_records():
    fetch = verify.DaysFetch(T0)
    fetch.add(decode_all(Page(KEY, [], False, fetch.since, 0).encode(4, 100000, False)))
    with pytest.raises(ProtocolError, match='no daily summaries'):
        fetch.result()
    recs = records(2)
    with pytest.raises(ProtocolError, match='records where daily summaries only'):
        verify.DaysFetch(T0).add(decode_all(Page(KEY, recs, False, recs[-1]['dateTime'],
                                                 0).encode(4, 100000, False)))


# ---------------------------------------------------------------------------------------------
#  Requests for daily summaries
# ---------------------------------------------------------------------------------------------

def request_envelope(wire):
    return envelope(wire, topic=REQUEST_TOPIC, correlation=CORRELATION,
                    response_topic='replicate/response/' + NODE, expiry=30)


@pytest.mark.parametrize('days', [0, T0 - 1, T0 + 600])
def test_records_request_with_days(days):
    request = messages.RecordsRequest(KEY, NODE, T0 + 600, until=T0 + DAY, limit=500, days=days)
    wire = request.encode()
    assert wire_pairs(wire)[-1] == ('days', str(days))
    assert decode_request(request_envelope(wire)) == request


def test_records_request_without_days_sends_none():
    wire = messages.RecordsRequest(KEY, NODE, T0, limit=5).encode()
    assert 'days' not in dict(wire_pairs(wire))
    assert decode_request(request_envelope(wire)).days is None


def test_records_request_of_protocol_1_never_asks_for_days():
    env = raw(b'1699990000', [('data_binding', KEY), ('days', '5')], topic=REQUEST_TOPIC)
    assert decode_request(env).days is None


@pytest.mark.parametrize('days', ['x', '-1', '1.5'])
def test_records_request_bad_days(days):
    pairs = [('data_binding', KEY), ('protocol', '2'), ('node', NODE), ('op', 'records'),
             ('limit', '10'), ('days', days)]
    with pytest.raises(ProtocolError, match='days'):
        decode_request(raw(b'0', pairs))


def test_digest_request_with_summaries_round_trip():
    request = DigestRequest(KEY, NODE, T0 - 1, T0 + 7 * DAY, DAY, ('dateTime', 'outTemp'),
                            summaries=True)
    wire = request.encode()
    assert json.loads(wire.payload) == {'since': T0 - 1, 'until': T0 + 7 * DAY, 'bucket': DAY,
                                        'columns': ['dateTime', 'outTemp'], 'summaries': True}
    decoded = decode_request(request_envelope(wire))
    assert decoded == request and decoded.summaries is True
    plain = DigestRequest(KEY, NODE, T0 - 1, T0 + 7 * DAY, DAY, ('dateTime',))
    assert 'summaries' not in json.loads(plain.encode().payload)
    assert decode_request(request_envelope(plain.encode())).summaries is False


@pytest.mark.parametrize('value', [1, 'true', 'yes', None, False])
def test_digest_request_summaries_only_when_true(value):
    payload = json.dumps({'since': 0, 'until': 7 * DAY, 'bucket': DAY, 'columns': ['dateTime'],
                          'summaries': value}).encode()
    assert summaries.parse_digest_request(payload)[4] is False


# ---------------------------------------------------------------------------------------------
#  Live records with daily summaries
# ---------------------------------------------------------------------------------------------

def live_env(wire):
    return envelope(wire, topic=ARCHIVE_TOPIC)


def test_live_record_with_days_round_trip():
    ts = T0 + DAY + 600
    rows = day_rows(days=1, first=T0 + DAY, through=ts)
    live = LiveRecord(KEY, record(ts), ts - 300, rows)
    wire = live.encode()
    pairs = wire_pairs(wire)
    assert [k for k, _ in pairs] == ['data_binding', 'protocol', 'prev', 'days']
    assert pairs[3] == ('days', rows.encode_property())
    decoded = LiveRecord.decode(live_env(wire))
    assert decoded == live and decoded.days == rows and decoded.days_error is None


def test_live_record_of_midnight_goes_with_the_day_before():
    ts = T0 + DAY                                  # the last record of day T0
    rows = day_rows(days=1, first=T0, through=ts)
    decoded = LiveRecord.decode(live_env(LiveRecord(KEY, record(ts), ts - 300, rows).encode()))
    assert decoded.days == rows


def test_live_record_whose_days_are_too_large_goes_without_them(monkeypatch):
    ts = T0 + 600
    monkeypatch.setattr(summaries, 'MAX_DAYS_PROPERTY', 10)
    wire = LiveRecord(KEY, record(ts), 0, day_rows(days=1, through=ts)).encode()
    assert 'days' not in dict(wire_pairs(wire))
    decoded = LiveRecord.decode(live_env(wire))
    assert decoded == LiveRecord(KEY, record(ts), 0) and decoded.days_error is None


def live_with(days_text, ts=T0 + 600, version='2'):
    pairs = [('data_binding', KEY)] + ([('protocol', version)] if version else []) + \
        [('prev', str(ts - 300)), ('days', days_text)]
    return raw(p.encode_json(record(ts)), pairs, topic=ARCHIVE_TOPIC)


@pytest.mark.parametrize('text, word', [
    ('%%% not base64', 'base64'),
    (base64.b64encode(b'\x00\x01').decode(), 'inflate'),
    (DayRows(US, '4.0', T0, T0 + DAY, {'outTemp': (SCALAR, [day_row('outTemp', T0 - DAY, 9)])},
             T0 + 600).encode_property(), 'is not in'),
    (day_rows(days=1, units=US).encode_property(), 'do not go with record'),   # no through
    (day_rows(days=1, through=T0 + 900).encode_property(), 'do not go with record'),
    (day_rows(days=1, first=T0 + DAY, through=T0 + 600).encode_property(),
     'do not go with record'),                                               # another day
], ids=['not-base64', 'not-zlib', 'invalid', 'no-through', 'other-record', 'other-day'])
def test_live_record_with_bad_days_is_decoded_without_them(text, word):
    decoded = LiveRecord.decode(live_with(text))
    assert decoded.record == record(T0 + 600) and decoded.prev == T0 + 300
    assert decoded.days is None
    assert word in decoded.days_error


def test_live_record_of_protocol_1_ignores_days():
    text = day_rows(days=1, through=T0 + 600).encode_property()
    decoded = LiveRecord.decode(live_with(text, version=None))
    assert decoded.days is None and decoded.days_error is None


# ---------------------------------------------------------------------------------------------
#  The digest of daily summaries
# ---------------------------------------------------------------------------------------------

def tables_of(rows):
    return [(name, rows.tables[name][1]) for name in sorted(rows.tables)]


def test_digest_days_canonical_form():
    rows = [(T0, 1, None, 2.5)]
    expected = hashlib.sha256(b'["outTemp",%d.0,1.0,null,2.5]\n' % T0).hexdigest()
    assert summaries.digest_days([('outTemp', rows)], DAY) == {T0: expected}


def test_digest_days_is_deterministic():
    rows = day_rows(days=3)
    digest = summaries.digest_days(tables_of(rows), DAY)
    assert sorted(digest) == [T0, T0 + DAY, T0 + 2 * DAY]
    assert all(len(v) == 64 for v in digest.values())
    assert summaries.digest_days(tables_of(day_rows(days=3)), DAY) == digest
    # the same values in another form (ints for floats, lists for tuples, read again)
    again = DayRows.from_json(as_json(rows))
    assert summaries.digest_days([(n, [list(r) for r in again.tables[n][1]])
                                  for n in sorted(rows.tables)], DAY) == digest
    floats = [(n, [[float(v) if isinstance(v, int) else v for v in r] for r in rs])
              for n, rs in tables_of(rows)]
    assert summaries.digest_days(floats, DAY) == digest
    assert summaries.digest_days([], DAY) == {}


def test_digest_days_changes_with_one_value_in_its_bucket_only():
    rows = day_rows(days=3)
    digest = summaries.digest_days(tables_of(rows), DAY)
    altered = copy.deepcopy(tables_of(rows))
    row = list(altered[1][1][1])                        # outTemp, day 1
    row[3] += 5                                         # max, as a LOOP high would
    altered[1][1][1] = tuple(row)
    other = summaries.digest_days(altered, DAY)
    assert other[T0 + DAY] != digest[T0 + DAY]
    assert {k: v for k, v in other.items() if k != T0 + DAY} == \
        {k: v for k, v in digest.items() if k != T0 + DAY}
    # the type is part of what is hashed
    renamed = [('inTemp' if n == 'outTemp' else n, r) for n, r in tables_of(rows)]
    assert summaries.digest_days(renamed, DAY) != digest


def test_digest_days_in_longer_buckets():
    rows = day_rows(days=3)
    week = 7 * DAY
    digest = summaries.digest_days(tables_of(rows), week)
    starts = {d - d % week for d in (T0, T0 + DAY, T0 + 2 * DAY)}
    assert sorted(digest) == sorted(starts) and len(starts) == 2     # across a week's end
    both = summaries.digest_days(tables_of(rows.only(T0, T0 + 2 * DAY)), week)
    assert both[T0 - T0 % week] == digest[T0 - T0 % week]


def test_with_day_digests():
    buckets = [[T0, 288, 'a' * 64], [T0 + DAY, 288, 'b' * 64]]
    assert summaries.with_day_digests(buckets, {T0: 'c' * 64}) == [
        [T0, 288, 'a' * 64, 'c' * 64], [T0 + DAY, 288, 'b' * 64, '']]
    assert buckets[0] == [T0, 288, 'a' * 64]                  # not changed
    assert summaries.with_day_digests([], {T0: 'c'}) == []


# ---------------------------------------------------------------------------------------------
#  Digest replies with the summaries' digests, and their comparison
# ---------------------------------------------------------------------------------------------

FOUR = [[T0, 288, 'a' * 64, 'c' * 64], [T0 + DAY, 287, 'b' * 64, '']]


@pytest.mark.parametrize('compress', [False, True])
def test_digest_reply_with_four_element_entries_round_trip(compress):
    reply = DigestReply(KEY, FOUR, US)
    decoded = decode_answer(envelope(reply.encode(compress), correlation=CORRELATION),
                            DigestReply)
    assert decoded == reply


def digest_reply_pairs():
    return [('data_binding', KEY), ('protocol', '2'), ('encoding', 'json'), ('seq', '0'),
            ('count', '2'), ('end', '1'), ('more', '0'), ('units', '1')]


def test_digest_reply_with_three_and_four_element_entries():
    mixed = [[T0, 288, 'a' * 64], [T0 + DAY, 288, 'b' * 64, 'c' * 64]]
    assert DigestReply.decode(raw(p.encode_json(mixed), digest_reply_pairs())).buckets == mixed


@pytest.mark.parametrize('entry', [[T0, 3, 'x', 'y', 'z'], [T0, 3, 'x', 4], [T0, 3, 'x', None],
                                   [T0, 3, None, 'y'], [T0, 3, 'x', ['y']]])
def test_digest_reply_bad_four_element_entry(entry):
    payload = json.dumps(FOUR + [entry]).encode()
    with pytest.raises(ProtocolError, match=r'digest entry .* is not \[bucket start, count, '
                       r'digest\(, digest of the summaries\)\]'):
        DigestReply.decode(raw(payload, digest_reply_pairs()))


def test_differences_of_summaries_only():
    local = [[T0, 288, 'a', 's0'], [T0 + DAY, 288, 'b', 's1'], [T0 + 2 * DAY, 288, 'c', 's2']]
    remote = {T0: [T0, 288, 'a', 's0'], T0 + DAY: [T0 + DAY, 288, 'b', 'XX'],
              T0 + 2 * DAY: [T0 + 2 * DAY, 288, 'X', 'XX']}
    found = verify.differences(local, remote)
    assert found == [verify.Difference(T0 + DAY, 288, 288, True),
                     verify.Difference(T0 + 2 * DAY, 288, 288, False)]
    assert found[0].describe() == 'daily summaries differ (288 records on both sides)'
    assert found[1].describe() == '288 records here, 288 on the primary'


def test_differences_of_a_bucket_on_one_side_are_not_of_summaries_only():
    local = [[T0, 288, 'a', 's0']]
    remote = {T0 + DAY: [T0 + DAY, 5, 'b', 's1']}
    assert verify.differences(local, remote) == [verify.Difference(T0, 288, 0, False),
                                                 verify.Difference(T0 + DAY, 0, 5, False)]


def test_differences_of_counts_with_the_same_summaries():
    local = [[T0, 280, 'a', 's0']]
    remote = {T0: [T0, 288, 'b', 's0']}
    assert verify.differences(local, remote) == [verify.Difference(T0, 280, 288, False)]


@pytest.mark.parametrize('side', ['here', 'primary', 'one-entry-here'])
def test_summaries_are_compared_only_if_both_sides_have_them(side):
    four = [[T0, 288, 'a', 's0'], [T0 + DAY, 288, 'b', 's1']]
    three_remote = [[T0, 288, 'a'], [T0 + DAY, 288, 'b']]
    altered = [[T0, 288, 'a', 'XX'], [T0 + DAY, 288, 'b', 'XX']]
    if side == 'here':            # an older digest here, the primary's with summaries
        local, remote = [e[:3] for e in altered], four
    elif side == 'primary':       # an older primary: no summaries in its digest
        local, remote = altered, three_remote
    else:                         # one entry here without them: none compared
        local, remote = [altered[0], altered[1][:3]], four
    assert verify.differences(local, {e[0]: e for e in remote}) == []
    # records that differ still do
    local = [list(e) for e in local]
    local[1][2] = 'Z'
    assert verify.differences(local, {e[0]: e for e in remote}) == [
        verify.Difference(T0 + DAY, 288, 288, False)]


class SummaryStore:
    """What Comparison reads of a TargetDatabase, with digests of 4-element entries."""

    columns = ['dateTime', 'outTemp']

    def __init__(self, entries, units=US):
        self.entries = entries
        self.units = units
        self.asked = []

    def unit_system(self):
        return self.units

    def digest(self, since, until, bucket, columns, summaries=False, null_inf=False):
        self.asked.append((list(columns), summaries))
        return [e if summaries else e[:3] for e in self.entries]


def test_a_comparison_with_summaries_finds_a_day_of_summaries_only():
    here = [[T0, 288, 'a', 's0'], [T0 + DAY, 288, 'b', 's1']]
    there = [[T0, 288, 'a', 's0'], [T0 + DAY, 288, 'b', 'XX']]
    store = SummaryStore(here)
    comparison = verify.Comparison(store, T0 - 1, T0 + 2 * DAY - 300, summaries=True)
    assert comparison.summaries
    assert comparison.take(DigestReply(KEY, there, US)) == [
        verify.Difference(T0 + DAY, 288, 288, True)]
    assert store.asked == [(['dateTime', 'outTemp'], True)]
    # without summaries: the same reply compares equal
    plain = verify.Comparison(SummaryStore(here), T0 - 1, T0 + 2 * DAY - 300)
    assert not plain.summaries
    assert plain.take(DigestReply(KEY, [e[:3] for e in there], US)) == []


def test_a_comparison_in_other_units_compares_no_summaries():
    store = SummaryStore([[T0, 288, 'a', 's0']], units=US)
    comparison = verify.Comparison(store, T0 - 1, T0 + DAY - 300, summaries=True)
    assert comparison.take(DigestReply(KEY, [[T0, 288, 'x', 'y']], METRIC)) is None
    assert comparison.dates_only and not comparison.summaries
    assert comparison.take(DigestReply(KEY, [[T0, 288, 'a']], METRIC)) == []
    assert store.asked == [(['dateTime'], False)]


def test_a_day_too_big_for_a_message_travels_in_parts_by_type():
    """With small messages a single day's summaries are split by observation type, and
    merge() puts the day back together as it was (before, the day was left out and the
    secondary rebuilt it, losing the primary's LOOP highs and lows)."""
    rows = day_rows(days=2)
    whole = [payload for payload, _ in rows.split(10 ** 6, False)]
    assert len(whole) == 1
    small = len(whole[0]) // 3
    parts = rows.split(small, False)
    assert parts is not None and len(parts) > 2
    assert all(len(payload) <= small for payload, _ in parts)
    decoded = [DayRows.from_json(json.loads(payload)) for payload, _ in parts]
    assert any(set(part.tables) != set(rows.tables) for part in decoded)
    assert DayRows.merge(list(reversed(decoded))) == rows
