"""Compact live records: a day's daily summaries as a patch of WeeWX's own update (daypatch).

Two real DaySummaryManagers on SQLite (no broker): the primary stores records the way
StdArchive does with loop_hilo (the LOOP highs and lows of the archive period, then the
record: addRecord(record, accumulator=...)); the responder's Patcher makes each record's
patch from the day it read after storing it; the secondary stores the record, applies the
patch to the rows it held before, and ends with the primary's rows, row by row, in a time
zone with a DST change and across midnights, at 5-minute and 30-minute intervals.
"""

import json
import os
import random
import time
import zlib

import pytest
import weeutil.weeutil
import weewx.accum
import weewx.manager
import weewx.schemas.wview_extended

from tests.support.station import generate_records
from tests.unit.test_messages import envelope
from user.mqttreplicate import database, daypatch, messages, protocol, summaries, target
from user.mqttreplicate.messages import LiveRecord
from user.mqttreplicate.protocol import ProtocolError
from user.mqttreplicate.summaries import DayPatch

KEY = 'weewx/wx_binding'
LOOP_TYPES = ('outTemp', 'barometer', 'windSpeed', 'windGust', 'outHumidity', 'radiation')


@pytest.fixture
def new_york():
    """America/New_York: 2023-11-05 has 25 hours."""
    old = os.environ.get('TZ')
    os.environ['TZ'] = 'America/New_York'
    time.tzset()
    yield
    if old is None:
        del os.environ['TZ']
    else:
        os.environ['TZ'] = old
    time.tzset()


def open_manager(path):
    db = {'database_name': str(path), 'driver': 'weedb.sqlite', 'SQLITE_ROOT': '/'}
    return weewx.manager.DaySummaryManager.open_with_create(
        db, 'archive', schema=weewx.schemas.wview_extended.schema)


def loop_accumulator(record, rng, types=LOOP_TYPES):
    """The LOOP packets of a record's archive period, as StdArchive accumulates them:
    values around the record's, some above its highs and below its lows."""
    ts, step = record['dateTime'], record['interval'] * 60
    accum = weewx.accum.Accum(weeutil.weeutil.TimeSpan(ts - step, ts), record['usUnits'])
    for k in range(4):
        packet = {'dateTime': ts - step + (k + 1) * step // 4, 'usUnits': record['usUnits']}
        for name in types:
            if record.get(name) is not None:
                packet[name] = record[name] + rng.uniform(-3, 3)
        if 'windSpeed' in types:
            packet['windDir'] = rng.uniform(0, 360)
        accum.addRecord(packet)
    return accum


def as_sent(manager, ts):
    """The record as the responder publishes it: read back, without NULLs."""
    return protocol.compact(manager.getRecord(ts))


def replicate(tmp_path, start, count, minutes, seed=1, check=None, without=(),
              loop_types=LOOP_TYPES):
    """Store count records at the primary with LOOP highs and lows (each record without
    the fields named in `without`), carry each day by patch to the secondary as its Sink
    does (the record as TargetDatabase.prepare gives it); return the patches and the
    payloads' sizes."""
    rng = random.Random(seed)
    primary = open_manager(tmp_path / 'primary.sdb')
    secondary = open_manager(tmp_path / 'secondary.sdb')
    store = target.TargetDatabase(None, manager=secondary)
    patcher = daypatch.Patcher()
    patches, prev, sizes = [], 0, []
    for record in generate_records(start, count, minutes):
        record = {k: v for k, v in record.items() if k not in without}
        primary.addRecord(record, accumulator=loop_accumulator(record, rng, loop_types),
                          log_success=False)
        ts = record['dateTime']
        days = database.live_days(primary, ts)
        sent = as_sent(primary, ts)
        patch = patcher.patch(KEY, sent, prev, days)
        assert patch is not None, ts
        # on the wire and back
        wire = LiveRecord(KEY, sent, prev, days, patch=patch, compact=True).encode()
        assert dict(wire.properties).get('days') is None
        decoded = LiveRecord.decode(envelope(wire, topic='replicate/archive/weewx'))
        assert decoded.record == sent and decoded.prev == prev
        patch = decoded.patch
        sizes.append(len(wire.payload))
        base = database.read_days(secondary, database.day_start(ts), database.day_stop(ts),
                                  units=sent['usUnits'])
        prepared = store.prepare(sent, KEY)
        rebuilt = daypatch.apply(patch, base, prepared)
        assert rebuilt is not None, ts
        assert rebuilt.tables == days.tables
        secondary.addRecord(prepared, log_success=False)
        store.write_days(rebuilt)
        if check:
            check(primary, secondary, ts)
        patches.append(patch)
        prev = ts
    return primary, secondary, patches, sizes


def all_day_rows(manager):
    return {name: list(manager.genSql('SELECT * FROM archive_day_%s ORDER BY dateTime'
                                      % name)) for name in sorted(manager.daykeys)}


@pytest.mark.parametrize('minutes, count, hour', [(5, 300, 20), (30, 80, 20), (1, 90, 23)])
def test_patches_carry_the_primarys_days(tmp_path, new_york, minutes, count, hour):
    # across midnight, and for 5 and 30 minutes the DST change
    start = int(time.mktime((2023, 11, 4, hour, 0, 0, 0, 0, -1)))
    primary, secondary, patches, sizes = replicate(tmp_path, start, count, minutes)
    assert all_day_rows(secondary) == all_day_rows(primary)
    assert len({p.first for p in patches}) >= 2                      # midnights crossed
    # the LOOP highs and lows are what travels: a few cells, never a whole day
    cells = [sum(len(c) for c in p.cells.values()) for p in patches]
    assert max(cells) <= 4 * len(LOOP_TYPES) + 8
    assert sum(cells) / len(cells) < 12
    # the payload: the record and its patch, deflated with the dictionary of WeeWX's names
    assert sum(sizes) / len(sizes) < 500


def test_records_without_a_wind_gust_direction(tmp_path):
    """A driver that gives no windGustDir: the responder sends none, the secondary's
    prepare() adds it back as None (its own WeeWX update tells the two apart), and the
    prediction treats both alike."""
    start = 1700000000 - 1700000000 % 86400 - 3600
    # (no gusts in the LOOP packets: the records' own gusts make the day's highs)
    primary, secondary, _, _ = replicate(tmp_path, start, 40, 5, without=('windGustDir',),
                                         loop_types=('outTemp', 'barometer'))
    assert all_day_rows(secondary) == all_day_rows(primary)


def test_an_infinity_sends_the_whole_day(tmp_path):
    """A secondary on MySQL stores an infinity as NULL: a patch could never give the
    primary's day there, so the record goes with its whole day."""
    primary = open_manager(tmp_path / 'p.sdb')
    patcher = daypatch.Patcher()
    records = list(generate_records(1700000100, 3, 5))
    records[1]['outTemp'] = float('inf')
    prev = 0
    patches = []
    for record in records:
        primary.addRecord(record, log_success=False)
        ts = record['dateTime']
        patches.append(patcher.patch(KEY, as_sent(primary, ts), prev,
                                     database.live_days(primary, ts)))
        prev = ts
    assert patches[0] is not None
    assert patches[1] is None                 # the record holds it
    assert patches[2] is None                 # the day does (its max)


def test_without_loop_highs_and_lows_a_patch_is_empty(tmp_path):
    primary = open_manager(tmp_path / 'p.sdb')
    patcher = daypatch.Patcher()
    prev = 0
    for record in generate_records(1700000100, 20, 5):
        primary.addRecord(record, log_success=False)
        ts = record['dateTime']
        patch = patcher.patch(KEY, as_sent(primary, ts), prev,
                              database.live_days(primary, ts))
        assert patch.cells == {}
        prev = ts


def test_rows_here_that_are_not_the_primarys_give_no_day(tmp_path):
    """A secondary whose day differs from the primary's before the record (its own update,
    a lost patch) gets None, never a wrong day."""
    rng = random.Random(3)
    primary = open_manager(tmp_path / 'p.sdb')
    patcher = daypatch.Patcher()
    records = list(generate_records(1700000100, 3, 5))
    prev, base = 0, None
    for record in records:
        base = database.read_days(primary, database.day_start(record['dateTime']),
                                  database.day_stop(record['dateTime']))
        primary.addRecord(record, accumulator=loop_accumulator(record, rng),
                          log_success=False)
        ts = record['dateTime']
        patch = patcher.patch(KEY, as_sent(primary, ts), prev,
                              database.live_days(primary, ts))
        prev = ts
    sent = as_sent(primary, prev)
    assert daypatch.apply(patch, base, sent) is not None
    columns, rows = base.tables['outTemp']
    changed = dict(base.tables, outTemp=(columns, [rows[0][:3] + (rows[0][3] + 1,)
                                                   + rows[0][4:]]))
    assert daypatch.apply(patch, summaries.DayRows(base.units, base.version, base.first,
                                                   base.stop, changed), sent) is None
    other_units = summaries.DayRows(0x10, base.version, base.first, base.stop, base.tables)
    assert daypatch.apply(patch, other_units, sent) is None
    assert daypatch.apply(patch, None, sent) is None


def test_no_patch_without_the_day_sent_before(tmp_path):
    """A responder that restarted in the middle of a day has not sent the day before the
    record: the record goes with its whole day."""
    primary = open_manager(tmp_path / 'p.sdb')
    records = list(generate_records(1700000100, 3, 5))
    for record in records:
        primary.addRecord(record, log_success=False)
    ts, prev = records[-1]['dateTime'], records[-2]['dateTime']
    days = database.live_days(primary, ts)
    assert daypatch.Patcher().patch(KEY, as_sent(primary, ts), prev, days) is None
    assert daypatch.Patcher().patch(KEY, as_sent(primary, ts), prev, None) is None


def test_a_record_without_interval_has_no_patch(tmp_path):
    primary = open_manager(tmp_path / 'p.sdb')
    record = next(generate_records(1700000100, 1, 5))
    primary.addRecord(record, log_success=False)
    ts = record['dateTime']
    sent = dict(as_sent(primary, ts))
    del sent['interval']
    assert daypatch.Patcher().patch(KEY, sent, 0, database.live_days(primary, ts)) is None


# --- on the wire -------------------------------------------------------------------------------

def good_patch(**changes):
    fields = dict(units=1, version='4.0', first=1699920000, digest='0123456789abcdef',
                  cells={'outTemp': {'max': 71.5, 'maxtime': 1699950000}, 'rain': {}})
    fields.update(changes)
    return DayPatch(**fields)


def test_patch_round_trip():
    patch = good_patch(cells={'outTemp': {'max': float('inf'), 'min': None}})
    assert DayPatch.from_json(json.loads(json.dumps(patch.to_json()))) == patch


@pytest.mark.parametrize('changes, word', [
    ({'units': 7}, 'unit system'),
    ({'version': ''}, 'version'),
    ({'first': 'x'}, 'first'),
    ({'digest': 'xyz'}, 'digest'),
    ({'digest': '0123456789ABCDEF'}, 'digest'),
    ({'cells': []}, 'cells'),
    ({'cells': {'outTemp': 5}}, 'outTemp'),
    ({'cells': {'outTemp': {'dateTime': 5}}}, 'dateTime'),
    ({'cells': {'outTemp': {'max': 'high'}}}, 'not a value'),
    ({'cells': {'out Temp': {}}}, 'out Temp'),
])
def test_bad_patch(changes, word):
    with pytest.raises(ProtocolError, match=word):
        DayPatch.from_json(json.loads(json.dumps(good_patch(**changes).to_json())))


def test_a_bad_patch_does_not_refuse_the_record():
    rec = {'dateTime': 1699950300, 'usUnits': 1, 'interval': 5, 'outTemp': 70.5}
    wire = LiveRecord(KEY, rec, 1699950000, patch=good_patch(digest='nothex!!nothex!!'),
                      compact=True).encode()
    live = LiveRecord.decode(envelope(wire, topic='replicate/archive/weewx'))
    assert live.record == rec and live.patch is None and 'digest' in live.days_error
    good = LiveRecord(KEY, rec, 1699950000, patch=good_patch(), compact=True).encode()
    decoded = LiveRecord.decode(envelope(good, topic='replicate/archive/weewx'))
    assert decoded.patch == good_patch() and decoded.compact and decoded.days is None
    assert dict(good.properties)['encoding'] == protocol.ENCODING_LIVE


def test_a_compact_record_without_patch_carries_its_whole_day():
    rec = {'dateTime': 1699950300, 'usUnits': 1, 'interval': 5, 'outTemp': 70.5}
    days = summaries.DayRows(1, '4.0', 1699920000, 1700006400, {
        'outTemp': (('dateTime', 'min', 'mintime', 'max', 'maxtime', 'sum', 'count', 'wsum',
                     'sumtime'), [(1699920000, 70.5, 1699950300, 70.5, 1699950300, 70.5, 1,
                                   21150.0, 300)])}, 1699950300)
    wire = LiveRecord(KEY, rec, 1699950000, days, compact=True).encode()
    decoded = LiveRecord.decode(envelope(wire, topic='replicate/archive/weewx'))
    assert decoded.days == days and decoded.patch is None and decoded.record == rec


@pytest.mark.parametrize('obj, word', [
    ([1, 2], 'not {"record"'),
    ({'patch': {}}, 'not {"record"'),
    ({'record': {'dateTime': 'x'}}, 'dateTime'),
])
def test_bad_compact_payload(obj, word):
    deflater = zlib.compressobj(9, zdict=protocol.LIVE_DICTIONARY)
    payload = deflater.compress(json.dumps(obj).encode()) + deflater.flush()
    wire = messages.Wire(payload, [('data_binding', KEY), ('protocol', '2'), ('prev', 0),
                                   ('encoding', protocol.ENCODING_LIVE)])
    with pytest.raises(ProtocolError, match=word):
        LiveRecord.decode(envelope(wire, topic='replicate/archive/weewx'))


def test_an_older_decoder_cannot_read_a_compact_payload():
    """Why compact records go only to requesters that say they take them: an older one
    knows no such encoding, and without the dictionary the payload does not even inflate.
    (tests/integration/test_compact_live.py runs the older requester itself.)"""
    rec = {'dateTime': 1699950300, 'usUnits': 1, 'interval': 5, 'outTemp': 70.5}
    wire = LiveRecord(KEY, rec, 1699950000, compact=True).encode()
    with pytest.raises(ProtocolError, match='inflate'):
        protocol.decode_payload(wire.payload, protocol.ENCODING_ZLIB)


def test_a_compact_patch_outside_protocol_2_is_ignored():
    rec = {'dateTime': 1699950300, 'usUnits': 1, 'interval': 5, 'outTemp': 70.5}
    wire = LiveRecord(KEY, rec, 1699950000, patch=good_patch(), compact=True).encode()
    pairs = [(k, str(v)) for k, v in wire.properties if k != 'protocol']
    decoded = LiveRecord.decode(envelope(messages.Wire(wire.payload, []), pairs=pairs,
                                         topic='replicate/archive/weewx'))
    assert decoded.record == rec and decoded.patch is None
