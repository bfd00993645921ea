"""The requester's own verification, AutoVerifier (SPEC 5.5), as a state machine: no broker.

A fake replica with a fake link records the requests sent; the replica's store is a real
TargetDatabase on a throwaway SQLite station, and the primary's "truth" another seeded
station whose digests and pages answer the requests. Answers go through what the loop
thread does with them: a message (JSON payload, user properties as on the wire) decoded by
messages.decode_answer as the class verifier.expects() names (a ProtocolError handed on as
the answer), then verifier.on_answer()."""

import dataclasses
import json
import logging
import shutil
import sqlite3
import time
from types import SimpleNamespace
from typing import Optional

import pytest

from tests.support.station import (compare_databases, make_station, seed_history,
                                   simulated_record)

from user.mqttreplicate import database, messages, summaries, target
from user.mqttreplicate import protocol
from user.mqttreplicate import verify

DAY = 86400
START = 1700000000 - 1700000000 % DAY          # 2023-11-14 00:00 UTC
STEP = 300
DAYS = 4                                       # seeded: days 0..3, the last ends at NEWEST
NEWEST = START + DAYS * DAY - STEP
PER_DAY = DAY // STEP
KEY = 'weewx/wx_binding'
PAGE_TIMEOUT = 30.0
US, METRIC = 0x01, 0x10


# ------------------------------------------------------------------------------------------------
# fakes
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Request:
    kind: str                       # 'digest' or 'records'
    correlation: bytes
    since: int
    until: Optional[int]
    bucket: Optional[int] = None
    columns: Optional[list] = None
    replace: Optional[bool] = None

    @property
    def answer_kind(self):
        return messages.DigestReply if self.kind == 'digest' else messages.Batch


class FakeLink:
    """The replica's narrow broker interface: connected(), send_digest(), send_records()."""

    def __init__(self):
        self.up = True
        self.sent = []

    def connected(self):
        return self.up

    def send_digest(self, binding, since, until, bucket, columns, correlation=None,
                    summaries=False, null_inf=False):
        assert binding.key == KEY and correlation is not None
        self.sent.append(Request('digest', correlation, since, until, bucket, list(columns)))
        return correlation

    def send_records(self, binding, since, until=None, replace=False, correlation=None,
                     days=None):
        assert binding.key == KEY and correlation is not None
        self.sent.append(Request('records', correlation, since, until, replace=replace))
        return correlation

    def of(self, kind):
        return [r for r in self.sent if r.kind == kind]


class Faults:
    """What replica.faults (a RateLimitedLog) was given: (level, kind, message)."""

    def __init__(self):
        self.calls = []

    def __call__(self, level, kind, message, *args):
        self.calls.append((level, kind, message % args))

    def kinds(self):
        return [kind for _, kind, _ in self.calls]


class FakeReplica:
    """What AutoVerifier uses of a Replica, and nothing else."""

    def __init__(self, options, link, store):
        self.options = options
        self.link = link
        self.store = store
        self.binding = SimpleNamespace(key=KEY, instance='weewx')
        self.key = KEY
        self.position = store.newest()
        self.primary_newest = None
        self.catching_up = False
        self.legacy = False
        self.status_changes = 0
        self.faults = Faults()

    @property
    def busy(self):
        return self.catching_up or self.legacy

    def status_changed(self):
        self.status_changes += 1


class Clock:
    """time.monotonic, moved forward at will."""

    def __init__(self, monkeypatch):
        self.offset = 0.0
        real = time.monotonic
        monkeypatch.setattr(time, 'monotonic', lambda: real() + self.offset)

    def advance(self, seconds):
        self.offset += seconds


def props(seq=0, end=1, more=None, last=None, units=None, error=None):
    """User properties of an answer's message as they travel (text; None: not sent)."""
    values = {'data_binding': KEY, 'protocol': protocol.PROTOCOL,
              'encoding': protocol.ENCODING_JSON, 'seq': seq, 'end': end, 'more': more,
              'last': last, 'units': units, 'error': error}
    return {name: str(value) for name, value in values.items() if value is not None}


def envelope(correlation, payload, **properties):
    return messages.Envelope(protocol.response_topic('replicate/response', 'node'),
                             json.dumps(payload).encode('utf-8'), props(**properties),
                             correlation)


def dump(station):
    """Every row of the archive and the daily summaries."""
    con = sqlite3.connect(str(station.db_path()))
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'archive%' "
            "AND name != 'archive_day__metadata' ORDER BY name")]
        return {t: con.execute('SELECT * FROM %s ORDER BY dateTime' % t).fetchall()
                for t in tables}
    finally:
        con.close()


def execute(station, sql, *args):
    con = sqlite3.connect(str(station.db_path()))
    with con:
        con.execute(sql, args)
    con.close()


def delete_rows(station, after, until):
    execute(station, 'DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?', after, until)


# ------------------------------------------------------------------------------------------------
# the rig
# ------------------------------------------------------------------------------------------------

class Rig:
    def __init__(self, primary, secondary, verify_days=3, page_size=500, verify_cycle_days=30):
        self.primary, self.secondary = primary, secondary
        self.options = SimpleNamespace(verify_days=verify_days, page_timeout=PAGE_TIMEOUT,
                                       page_size=page_size,
                                       verify_cycle_days=verify_cycle_days)
        self.store = target.TargetDatabase(secondary.manager_dict(), initialize=False)
        self.source = database.SourceDatabase(primary.manager_dict())
        self.link = FakeLink()
        self.replica = FakeReplica(self.options, self.link, self.store)
        self.verifier = verify.AutoVerifier(self.replica)

    def close(self):
        self.store.close()
        self.source.close()

    @property
    def sent(self):
        return self.link.sent

    def last(self, kind=None):
        request = self.sent[-1]
        assert kind is None or request.kind == kind, self.sent
        return request

    def start(self):
        self.verifier.schedule()
        self.verifier.tick()
        return self.last('digest')

    def request(self, correlation):
        (request,) = [r for r in self.sent if r.correlation == correlation]
        return request

    def feed(self, correlation, payload, **properties):
        """What the loop thread does with a message of an answer: decoded as what the request
        asked for (the class the verifier expects, while it waits for it), then handed on."""
        kind = self.request(correlation).answer_kind
        expects = self.verifier.expects(correlation)
        assert expects in (kind, None)
        try:
            answer = messages.decode_answer(envelope(correlation, payload, **properties), kind)
        except protocol.ProtocolError as e:
            answer = e
        self.verifier.on_answer(correlation, answer)

    def digest_of_primary(self, request):
        return self.source.digest(request.since, request.until, request.bucket,
                                  request.columns)

    def answer_digest(self, request=None, buckets=None, units=None, correlation=None):
        request = request or self.last('digest')
        if buckets is None:
            buckets = self.digest_of_primary(request)
        if units is None:
            units = self.source.unit_system()
        self.feed(correlation or request.correlation, buckets, units=units)

    def page(self, request):
        """(records, more, last) of the primary's answer to a records request."""
        records = self.source.read_page(request.since, request.until, self.options.page_size)
        if not records:
            return records, 0, request.since
        last = records[-1]['dateTime']
        more = int(bool(self.source.read_page(last, request.until, 1)))
        return records, more, last

    def answer_page(self, request=None, records=None, parts=1, order=None, correlation=None,
                    **end):
        """Answer a records request in `parts` messages, delivered in `order` (of seq);
        `end` overrides more / last of the page's last message."""
        request = request or self.last('records')
        page, more, last = self.page(request)
        if records is None:
            records = page
        end = dict({'more': more, 'last': last}, **end)
        size = -(-len(records) // parts) if records else 0
        chunks = [records[i * size:(i + 1) * size] for i in range(parts)]
        for seq in (order or range(parts)):
            extra = dict(end, end=1) if seq == parts - 1 else {'end': None}
            self.feed(correlation or request.correlation, chunks[seq], seq=seq, **extra)

    def answer_all_pages(self):
        """Answer records requests with the primary's pages until none is outstanding."""
        while self.verifier.correlation is not None and self.last().kind == 'records':
            self.answer_page()

    def same(self):
        return compare_databases(self.primary, 'wx_binding', self.secondary, 'wx_binding')

    def given_up(self, now=None):
        verifier = self.verifier
        assert verifier.correlation is None
        assert verifier.verified is None
        assert verifier.next_time == pytest.approx(
            (now or time.monotonic()) + verify.RETRY_INTERVAL, abs=5)
        assert self.replica.faults.kinds() == ['verify']
        assert self.replica.faults.calls[0][0] == logging.WARNING
        return self.replica.faults.calls[0][2]


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    """Two stations made once; `stations` gives both the seeded database afresh."""
    root = tmp_path_factory.mktemp('auto_verify')
    primary, secondary = make_station(root, 'primary'), make_station(root, 'secondary')
    seed_history(primary, START, DAYS * PER_DAY, loop_hilo=False)   # (repairs rebuild here)
    saved = root / 'seeded.sdb'
    shutil.copyfile(primary.db_path(), saved)
    return primary, secondary, saved


@pytest.fixture
def stations(pristine):
    primary, secondary, saved = pristine
    for station in (primary, secondary):
        path = station.db_path()
        path.parent.mkdir(exist_ok=True)
        for leftover in path.parent.glob(path.name + '-*'):
            leftover.unlink()
        shutil.copyfile(saved, path)
    return primary, secondary


@pytest.fixture
def make_rig(stations):
    rigs = []

    def make(**kwargs):
        rig = Rig(*stations, **kwargs)
        rigs.append(rig)
        return rig
    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig):
    return make_rig()


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def damage_day(station, day):
    """Rows of an hour of `day` deleted, one altered (summaries left as they were)."""
    delete_rows(station, day + 3600, day + 7200)
    execute(station, 'UPDATE archive SET outTemp = outTemp + 1 WHERE dateTime = ?', day + 600)


# ------------------------------------------------------------------------------------------------
# 1. in sync
# ------------------------------------------------------------------------------------------------

def test_in_sync_one_digest_and_nothing_changed(rig):
    before = dump(rig.secondary)
    request = rig.start()
    assert request.since == START - 1 and request.until == NEWEST and request.bucket == DAY
    assert request.columns == rig.store.columns
    assert rig.verifier.correlation == request.correlation
    rig.answer_digest()
    assert [r.kind for r in rig.sent] == ['digest']
    assert rig.verifier.verified and rig.verifier.repaired == 0
    assert rig.verifier.correlation is None and rig.verifier.due is False
    assert rig.verifier.next_time == pytest.approx(time.monotonic() + verify.VERIFY_INTERVAL,
                                                   abs=5)
    assert rig.verifier.expected(request.correlation)        # answered: a late copy ignored
    assert rig.replica.status_changes == 1       # the status tells when it verified
    assert rig.replica.faults.calls == []
    assert dump(rig.secondary) == before
    assert rig.same() == []


def test_not_started_before_due_and_when_not_ready(rig):
    rig.verifier.tick()
    assert rig.sent == []                  # not scheduled
    for name, value in (('catching_up', True), ('legacy', True), ('position', 0)):
        setattr(rig.replica, name, value)
        rig.verifier.schedule()
        rig.verifier.tick()
        assert rig.sent == [] and rig.verifier.due, name
        setattr(rig.replica, name, {'position': NEWEST}.get(name, False))
    rig.link.up = False
    rig.verifier.tick()
    assert rig.sent == [] and rig.verifier.due
    rig.link.up = True
    rig.verifier.tick()
    assert [r.kind for r in rig.sent] == ['digest'] and not rig.verifier.due


def test_window_ends_at_the_primarys_newest(rig):
    rig.replica.primary_newest = NEWEST - DAY
    request = rig.start()
    assert request.until == NEWEST - DAY
    assert request.since == verify.window(NEWEST - DAY, 3)[0] == START - DAY - 1


# ------------------------------------------------------------------------------------------------
# 2. a damaged day is repaired
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('day', [START + DAY, START + 3 * DAY], ids=['whole-day', 'last-day'])
def test_deleted_and_altered_rows_are_repaired(stations, make_rig, day):
    primary, secondary = stations
    damage_day(secondary, day)
    rig = make_rig()
    assert rig.same() != []
    rig.start()
    rig.answer_digest()
    (request,) = rig.link.of('records')
    assert request.since == day - 1
    assert request.until == min(day + DAY - 1, NEWEST)
    assert request.replace is True
    assert dump(rig.secondary)['archive'] == dump(secondary)['archive']
    rig.answer_page()
    assert rig.same() == []                       # archive and daily summaries
    assert rig.verifier.repaired == 1 and rig.verifier.verified
    assert rig.verifier.correlation is None
    assert [r.kind for r in rig.sent] == ['digest', 'records']
    assert rig.replica.faults.calls == []


def test_two_damaged_days_are_fetched_one_after_the_other(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START)
    damage_day(secondary, START + 2 * DAY)
    rig = make_rig()
    rig.start()
    rig.answer_digest()
    rig.answer_all_pages()
    assert [(r.since, r.until) for r in rig.link.of('records')] == [
        (START - 1, START + DAY - 1), (START + 2 * DAY - 1, START + 3 * DAY - 1)]
    assert rig.same() == []
    assert rig.verifier.repaired == 2 and rig.verifier.verified


# ------------------------------------------------------------------------------------------------
# 3. the primary has fewer records: left alone
# ------------------------------------------------------------------------------------------------

def test_day_with_fewer_records_on_the_primary_is_left_as_it_is(stations, make_rig):
    primary, secondary = stations
    delete_rows(primary, START + DAY + 3600, START + DAY + 7200)
    rig = make_rig()
    before = dump(secondary)
    rig.start()
    rig.answer_digest()
    assert rig.link.of('records') == []
    assert rig.replica.faults.kinds() == ['verify-fewer']
    level, _, message = rig.replica.faults.calls[0]
    assert level == logging.WARNING
    assert '%d records here but %d on the primary' % (PER_DAY, PER_DAY - 12) in message
    assert dump(secondary) == before
    assert rig.verifier.repaired == 0 and rig.verifier.correlation is None


def test_fewer_records_on_one_day_does_not_stop_the_repair_of_another(stations, make_rig):
    primary, secondary = stations
    delete_rows(primary, START + DAY + 3600, START + DAY + 7200)
    damage_day(secondary, START + 2 * DAY)
    rig = make_rig()
    rig.start()
    rig.answer_digest()
    assert [r.since for r in rig.link.of('records')] == [START + 2 * DAY - 1]
    rig.answer_all_pages()
    assert rig.verifier.repaired == 1
    assert rig.replica.faults.kinds() == ['verify-fewer']
    columns = rig.store.columns
    assert rig.store.digest(START + 2 * DAY - 1, START + 3 * DAY - 1, DAY, columns) \
        == rig.source.digest(START + 2 * DAY - 1, START + 3 * DAY - 1, DAY, columns)
    assert len(rig.store.read_page(START + DAY - 1, START + 2 * DAY - 1, 1000)) == PER_DAY


# ------------------------------------------------------------------------------------------------
# 4. pages in several messages, out of order, several pages a day
# ------------------------------------------------------------------------------------------------

def test_split_pages_out_of_order_replace_the_whole_day_at_once(stations, make_rig):
    primary, secondary = stations
    day = START + DAY
    damage_day(secondary, day)
    rig = make_rig(page_size=100)
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    first = rig.last('records')
    records, more, last = rig.page(first)
    assert len(records) == 100 and more == 1 and last == day + 99 * STEP
    rig.answer_page(parts=3, order=[2, 0, 1])           # the end message first
    second = rig.last('records')
    assert second is not first
    assert (second.since, second.until, second.replace) == (last, day + DAY - 1, True)
    assert dump(secondary) == damaged                    # nothing replaced yet
    rig.answer_page(parts=2, order=[1, 0])
    third = rig.last('records')
    assert third.since == day + 199 * STEP and dump(secondary) == damaged
    rig.answer_page()
    assert len(rig.link.of('records')) == 3
    assert rig.same() == []
    assert rig.verifier.repaired == 1 and rig.verifier.verified


def test_an_answer_waits_for_every_message(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    request = rig.last('records')
    records, more, last = rig.page(request)
    rig.feed(request.correlation, records[100:], seq=1, end=1, more=0, last=last)
    assert dump(secondary) == damaged and rig.verifier.correlation == request.correlation
    rig.feed(request.correlation, records[:100], seq=0, end=None)
    assert rig.same() == [] and rig.verifier.repaired == 1


# ------------------------------------------------------------------------------------------------
# 5. a page with more=1 and a bad last
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bad_last', ['missing', 'same', 'backwards', 'after-the-day'])
def test_more_without_a_usable_last_gives_up(stations, make_rig, bad_last):
    primary, secondary = stations
    day = START + DAY
    damage_day(secondary, day)
    rig = make_rig(page_size=100)
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    rig.answer_page()                                    # the first page, good
    request = rig.last('records')
    assert request.since == day + 99 * STEP
    last = {'missing': None, 'same': request.since, 'backwards': request.since - STEP,
            'after-the-day': day + DAY + STEP}[bad_last]
    rig.answer_page(more=1, last=last)
    message = rig.given_up()
    assert 'more=1' in message
    assert len(rig.link.of('records')) == 2
    assert dump(secondary) == damaged
    assert rig.verifier.repaired == 0 and rig.verifier.fetch is None


# ------------------------------------------------------------------------------------------------
# 6. records outside the range, invalid records, pages that are not lists
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fault, why', [
    ('after-the-day', 'outside the range'), ('before-since', 'outside the range'),
    ('usUnits', 'usUnits 77'), ('no-interval', 'interval None'),
    ('string-value', 'not a number'), ('not-a-list', 'not a list'),
    ('an-object', 'dateTime None'), ('not-a-record', 'not an object')])
def test_a_bad_record_or_page_changes_nothing(stations, make_rig, fault, why):
    primary, secondary = stations
    day = START + DAY
    damage_day(secondary, day)
    rig = make_rig()
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    request = rig.last('records')
    records, more, last = rig.page(request)
    if fault == 'after-the-day':
        records[-1] = dict(records[-1], dateTime=day + DAY)
    elif fault == 'before-since':
        records[0] = dict(records[0], dateTime=day - 1)
    elif fault == 'usUnits':
        records[5] = dict(records[5], usUnits=77)
    elif fault == 'no-interval':
        records[5] = {k: v for k, v in records[5].items() if k != 'interval'}
    elif fault == 'string-value':
        records[5] = dict(records[5], outTemp='hot')
    elif fault == 'not-a-list':
        records = 'records'
    elif fault == 'an-object':          # one bad record, as decode_batch reads an object
        records = {str(r['dateTime']): r for r in records}
    else:
        records[5] = [records[5]]
    if fault in ('not-a-list', 'an-object'):
        rig.feed(request.correlation, records, more=0, last=last)
    else:
        rig.answer_page(records=records)
    assert why in rig.given_up()
    assert dump(secondary) == damaged
    assert len(rig.link.of('records')) == 1 and rig.verifier.repaired == 0


def test_a_message_after_the_last_one_gives_up(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    request = rig.last('records')
    records, more, last = rig.page(request)
    rig.feed(request.correlation, records[:100], seq=0, end=1, more=0, last=last)
    rig.feed(request.correlation, records[100:], seq=1)
    rig.given_up()
    assert dump(secondary) == damaged


def test_a_refusal_gives_up(rig):
    request = rig.start()
    rig.feed(request.correlation, [], error='not authorised')
    assert 'not authorised' in rig.given_up()


# ------------------------------------------------------------------------------------------------
# 7. duplicates in an answer
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('twice', ['same-record', 'int-and-float'])
def test_a_duplicate_counts_once(stations, make_rig, twice):
    primary, secondary = stations
    # a record on the primary this station does not have, at 1700000000 (day 0)
    seed_history(primary, 0, 0, records=[simulated_record(1700000000)], loop_hilo=False)
    rig = make_rig()
    rig.start()
    rig.answer_digest()
    request = rig.last('records')
    assert request.since == START - 1
    records, more, last = rig.page(request)
    assert len(records) == PER_DAY + 1 and more == 0
    extra = next(r for r in records if r['dateTime'] == 1700000000)
    copy = dict(extra, dateTime=1700000000.0) if twice == 'int-and-float' else dict(extra)
    rig.answer_page(records=records + [copy], parts=2)
    assert rig.replica.faults.calls == []
    assert rig.verifier.repaired == 1 and rig.verifier.verified
    assert rig.same() == []


def test_repair_bucket_stores_a_duplicate_once(rig):
    records = rig.source.read_page(START - 1, START + DAY - 1, 1000)
    twice = records + [dict(records[3]), dict(records[4], dateTime=float(records[4]
                                                                         ['dateTime']))]
    assert verify.repair_bucket(rig.store, KEY, START, NEWEST, twice) == PER_DAY
    assert rig.same() == []


# ------------------------------------------------------------------------------------------------
# 8. the primary changed after its digest
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('change', ['fewer', 'more'])
def test_records_other_than_the_digest_counted_change_nothing(stations, make_rig, change):
    primary, secondary = stations
    day = START + DAY
    damage_day(secondary, day)
    rig = make_rig()
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    if change == 'fewer':
        delete_rows(primary, day + 40000, day + 41000)
    else:
        seed_history(primary, 0, 0, records=[simulated_record(day + 40000 + 150)],
                     loop_hilo=False)
    rig.answer_page()
    message = rig.given_up()
    assert ('records fetched' if change == 'fewer' else 'than the digest counted') in message
    assert dump(secondary) == damaged
    assert rig.verifier.repaired == 0


# ------------------------------------------------------------------------------------------------
# 9. malformed digests
# ------------------------------------------------------------------------------------------------

HEX = '0' * 64


@pytest.mark.parametrize('bad', [
    'not-a-list', 'entry-not-a-list', 'short-entry', 'count-a-string', 'count-a-float',
    'start-a-float', 'digest-not-a-string', 'count-zero', 'start-off-boundary',
    'start-after-until', 'start-long-before'])
def test_a_malformed_digest_gives_up(rig, bad):
    before = dump(rig.secondary)
    request = rig.start()
    buckets = rig.digest_of_primary(request)
    wrong = {'entry-not-a-list': 'x', 'short-entry': [START, PER_DAY],
             'count-a-string': [START, str(PER_DAY), HEX],
             'count-a-float': [START, float(PER_DAY), HEX],
             'start-a-float': [float(START), PER_DAY, HEX],
             'digest-not-a-string': [START, PER_DAY, 7],
             'count-zero': [START + DAY, 0, HEX],
             'start-off-boundary': [START + STEP, PER_DAY, HEX],
             'start-after-until': [START + 5 * DAY, PER_DAY, HEX],
             'start-long-before': [START - 5 * DAY, PER_DAY, HEX]}
    if bad == 'not-a-list':
        payload = {'buckets': buckets}
    else:
        payload = buckets + [wrong[bad]]
    rig.answer_digest(buckets=payload)
    rig.given_up()
    assert rig.link.of('records') == []
    assert dump(rig.secondary) == before


def test_a_digest_bucket_the_day_before_the_window_gives_up(rig):
    request = rig.start()
    assert request.since == START - 1
    buckets = rig.digest_of_primary(request)
    rig.answer_digest(buckets=[[START - DAY, PER_DAY, HEX]] + buckets)
    assert rig.link.of('records') == []
    rig.given_up()


# ------------------------------------------------------------------------------------------------
# 10. answers: what the loop thread decodes them as, old ones, undecodable ones
# ------------------------------------------------------------------------------------------------

def test_expects_names_the_class_to_decode_the_awaited_answer_as(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    assert rig.verifier.expects(None) is None
    digest = rig.start()
    assert rig.verifier.expects(digest.correlation) is messages.DigestReply
    assert rig.verifier.expects(b'a stranger') is None and not rig.verifier.expected(b'x')
    rig.answer_digest()
    records = rig.last('records')
    assert rig.verifier.expects(records.correlation) is messages.Batch
    assert rig.verifier.expects(digest.correlation) is None
    assert rig.verifier.expected(digest.correlation)
    rig.answer_page()
    assert rig.verifier.expects(records.correlation) is None
    assert rig.verifier.expected(records.correlation) and rig.verifier.repaired == 1


def test_an_answer_the_loop_thread_could_not_decode_gives_up_at_once(rig):
    request = rig.start()
    rig.verifier.on_answer(request.correlation, protocol.ProtocolError('payload is not JSON'))
    assert 'bad answer to the verification: payload is not JSON' in rig.given_up()


def test_an_answer_after_a_give_up_is_ignored(stations, make_rig, clock):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    damaged = dump(secondary)
    rig.start()
    rig.answer_digest()
    old = rig.last('records')
    clock.advance(PAGE_TIMEOUT + 1)
    rig.verifier.tick()
    rig.given_up()
    assert rig.verifier.expected(old.correlation) and not rig.verifier.expects(old.correlation)
    sent = list(rig.sent)
    rig.answer_page(request=old)
    assert dump(secondary) == damaged and rig.sent == sent
    assert rig.verifier.repaired == 0 and rig.verifier.verified is None


def test_an_answer_after_a_cancel_is_ignored_and_the_next_one_counts(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    damaged = dump(secondary)
    old = rig.start()
    rig.verifier.cancel()
    assert rig.verifier.expected(old.correlation)
    rig.answer_digest(request=old)
    assert rig.sent == [old] and dump(secondary) == damaged
    rig.verifier.tick()
    new = rig.last('digest')
    assert new.correlation != old.correlation
    rig.answer_digest(request=old)                       # a late copy, still ignored
    assert rig.sent == [old, new]
    rig.answer_digest(request=new)
    rig.answer_all_pages()
    assert rig.same() == [] and rig.verifier.repaired == 1


# ------------------------------------------------------------------------------------------------
# 11. timeouts
# ------------------------------------------------------------------------------------------------

def test_no_answer_within_page_timeout_gives_up_then_tries_again(rig, clock):
    request = rig.start()
    clock.advance(PAGE_TIMEOUT - 1)
    rig.verifier.tick()
    assert rig.verifier.correlation == request.correlation
    clock.advance(2)
    rig.verifier.tick()
    assert 'no answer' in rig.given_up()
    assert rig.verifier.expected(request.correlation)
    assert rig.sent == [request]
    clock.advance(verify.RETRY_INTERVAL - 10)
    rig.verifier.tick()
    assert rig.sent == [request]
    clock.advance(20)
    rig.verifier.tick()
    again = rig.last('digest')
    assert again.correlation != request.correlation
    rig.answer_digest()
    assert rig.verifier.verified


def test_a_silent_page_times_out_too(stations, make_rig, clock):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    rig.start()
    clock.advance(PAGE_TIMEOUT - 1)
    rig.answer_digest()                  # the clock starts again with each request
    clock.advance(PAGE_TIMEOUT - 1)
    rig.verifier.tick()
    assert rig.verifier.correlation == rig.last('records').correlation
    clock.advance(2)
    rig.verifier.tick()
    rig.given_up()


# ------------------------------------------------------------------------------------------------
# 12. the store fails during a repair
# ------------------------------------------------------------------------------------------------

def test_a_locked_database_gives_up_and_tries_again_later(stations, make_rig, clock):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig()
    damaged = dump(secondary)

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError('database is locked')
    rig.store.replace_range = locked
    rig.start()
    rig.answer_digest()
    rig.answer_page()                                     # does not raise
    assert 'database is locked' in rig.given_up()
    assert dump(secondary) == damaged and rig.verifier.repaired == 0

    del rig.store.replace_range
    clock.advance(verify.RETRY_INTERVAL + 1)
    rig.verifier.tick()
    assert len(rig.link.of('digest')) == 2
    rig.answer_digest()
    rig.answer_all_pages()
    assert rig.same() == [] and rig.verifier.repaired == 1 and rig.verifier.verified


def test_a_failing_digest_of_the_store_gives_up(rig, monkeypatch):
    def locked(*args, **kwargs):
        raise sqlite3.OperationalError('database is locked')
    request = rig.start()
    monkeypatch.setattr(rig.store, 'digest', locked)
    rig.answer_digest(request=request)
    assert 'database is locked' in rig.given_up()


# ------------------------------------------------------------------------------------------------
# 13. cancel
# ------------------------------------------------------------------------------------------------

def test_cancel_during_a_repair_makes_it_due_again(stations, make_rig):
    primary, secondary = stations
    damage_day(secondary, START + DAY)
    rig = make_rig(page_size=100)
    damaged = dump(secondary)
    rig.verifier.cancel()                         # idle: nothing to do again
    assert rig.verifier.due is False
    rig.start()
    rig.answer_digest()
    rig.answer_page()                             # one page of three
    old = rig.last('records')
    rig.verifier.cancel()
    assert rig.verifier.due is True and rig.verifier.correlation is None
    assert rig.verifier.expected(old.correlation) and not rig.verifier.expects(old.correlation)
    assert rig.verifier.fetch is None and rig.verifier.repairs == []
    rig.answer_page(request=old)
    assert dump(secondary) == damaged and rig.sent[-1] is old
    rig.verifier.tick()
    assert rig.last('digest').since == START - 1


# ------------------------------------------------------------------------------------------------
# 14. unit systems differ
# ------------------------------------------------------------------------------------------------

def test_other_unit_system_compares_timestamps_only(rig):
    first = rig.start()
    assert 'outTemp' in first.columns
    rig.answer_digest(units=METRIC)
    second = rig.last('digest')
    assert second is not first and second.columns == ['dateTime']
    assert (second.since, second.until, second.bucket) == (first.since, first.until, DAY)
    rig.answer_digest(units=METRIC)              # asked once only, whatever the answer says
    assert len(rig.link.of('digest')) == 2
    assert rig.link.of('records') == []
    assert rig.verifier.verified and rig.replica.faults.calls == []


def test_other_unit_system_still_finds_a_missing_day_part(stations, make_rig):
    primary, secondary = stations
    delete_rows(secondary, START + DAY + 3600, START + DAY + 7200)
    rig = make_rig()
    rig.start()
    rig.answer_digest(units=METRIC)
    rig.answer_digest(units=METRIC)
    (request,) = rig.link.of('records')
    assert request.since == START + DAY - 1


# ------------------------------------------------------------------------------------------------
# anti-entropy: the history before the window, a slice at a time (verify_cycle_days)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('day_number, damaged', [(0, START), (1, START + DAY)])
def test_a_slice_of_older_history_is_compared_after_the_window(stations, make_rig, monkeypatch,
                                                                day_number, damaged):
    """verify_days 1 covers days 2 and 3; days 0 and 1 are older history, cut into slices of a
    day (cycle of 2 days): each day's verification compares the window, then its slice, and
    repairs a damaged day there as carefully."""
    primary, secondary = stations
    damage_day(secondary, damaged)
    monkeypatch.setattr(verify, 'today', lambda: 1000 * 2 + day_number)
    rig = make_rig(verify_days=1, verify_cycle_days=2)
    window = rig.start()
    assert window.since == START + 2 * DAY - 1 and window.until == NEWEST
    rig.answer_digest()                                   # the window is in sync
    older = rig.last('digest')
    assert (older.since, older.until) == (damaged - 1, damaged + DAY - 1)
    rig.answer_digest()
    (request,) = rig.link.of('records')
    assert request.since == damaged - 1
    rig.answer_page()
    assert rig.same() == []
    assert rig.verifier.repaired == 1 and rig.verifier.verified
    assert rig.verifier.correlation is None
    assert [r.kind for r in rig.sent] == ['digest', 'digest', 'records']


def test_no_slice_when_the_cycle_is_off_or_the_window_covers_everything(stations, make_rig):
    rig = make_rig(verify_days=1, verify_cycle_days=0)
    rig.start()
    rig.answer_digest()
    assert [r.kind for r in rig.sent] == ['digest'] and rig.verifier.verified
    rig = make_rig(verify_days=10, verify_cycle_days=30)
    rig.start()
    rig.answer_digest()
    assert [r.kind for r in rig.sent] == ['digest'] and rig.verifier.verified


@pytest.mark.parametrize('history_days, cycle', [(1, 30), (29, 30), (30, 30), (31, 30),
                                                 (3650, 30), (3650, 1), (100, 7)])
def test_every_day_of_the_history_is_compared_once_a_cycle(history_days, cycle):
    """older_slice over cycle consecutive days covers every bucket before the window, each
    slice one digest at most (a cycle too short for that takes as many days as it needs:
    ten years with a cycle of one day, four)."""
    oldest = START + 1234
    window_since = START + history_days * DAY - 1
    days = max(cycle, -(-history_days // (summaries.MAX_DIGEST_BUCKETS - 1)))
    covered = set()
    for day_number in range(5000, 5000 + days):
        since, until = verify.older_slice(oldest, window_since, cycle, day_number)
        assert (until - since) // DAY < summaries.MAX_DIGEST_BUCKETS
        covered.update(range(since + 1, until + 1, DAY))
    assert covered == set(range(START, window_since + 1, DAY))
    assert verify.older_slice(oldest, START - 1, cycle, 0) is None
    assert verify.older_slice(oldest, window_since, 0, 0) is None
