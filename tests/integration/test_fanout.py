"""Many secondaries at a flat cost to the primary (responder.Responder with
pagecache.PageCache): secondaries catching up the same range at once share one database
read and one encoding per page, and end equal to the primary; a live record is published
once for all of them; the cache never hides a record that arrived since (the tail of a
catch-up is read for every request), and a changed past reaches a secondary after the
cache's expiry, through a repair (replace=1) or a record that went through the engine."""

import collections
import threading
import uuid

import pytest

from tests.integration.harness import (KEY, START, STEP, add_to_primary, assert_same,
                                       new_record, read_for_live, wait_until)
from tests.support.conversation import records
from tests.support.mqtt import user_properties
from user.mqttreplicate import database

pytestmark = pytest.mark.integration

PAGE = 200                # the secondaries' page_size


@pytest.fixture
def reads(monkeypatch):
    """The catch-up reads of the responder's workers: (since, until, limit, records read)."""
    seen = []
    real = database.SourceDatabase.read_columns

    def read_columns(self, since, until, limit):
        result = real(self, since, until, limit)
        if threading.current_thread().name.startswith('responder-worker'):
            seen.append((since, until, limit, len(result)))
        return result

    monkeypatch.setattr(database.SourceDatabase, 'read_columns', read_columns)
    return seen


def full_page_reads(seen):
    """How many times each full catch-up page (since -> count) was read."""
    return collections.Counter(since for since, until, limit, n in seen
                               if until is None and limit == PAGE and n == PAGE)


def secondaries(rig, broker, n, prefix='secondary', **options):
    options.setdefault('verify_days', 0)   # what the catch-up brings, not what a repair does
    return [rig.secondary(broker, name='%s-%d' % (prefix, i), page_size=PAGE, **options)
            for i in range(n)]


class Probe:
    """A test client asking the responder for one page, as a requester would."""

    def __init__(self, rig, broker):
        self.topic = 'replicate/response/probe-%s' % uuid.uuid4().hex[:6]
        self.client = rig.client(broker)
        self.client.subscribe(self.topic)

    def page(self, since, replace=False):
        """The dateTimes of the page since `since` (limit PAGE), and its end's properties."""
        correlation = uuid.uuid4().bytes
        props = {'data_binding': KEY, 'protocol': '2', 'node': 'probe', 'op': 'records',
                 'limit': str(PAGE), 'days': str(since), 'layout': 'packed'}
        if replace:
            props['replace'] = '1'
        self.client.publish('replicate/request/weewx', str(since).encode(),
                            user_properties=props, ResponseTopic=self.topic,
                            CorrelationData=correlation)
        stamps = []
        while True:
            message = self.client.expect(self.topic, timeout=10)
            if message.properties.CorrelationData != correlation:
                continue
            stamps += [r['dateTime'] for r in records(message)]
            end = user_properties(message)
            if end.get('end') == '1':
                return stamps, end


def test_secondaries_catching_up_at_once_share_each_page_and_live_records_go_once(
        rig, broker, reads):
    """Three secondaries catch up 2,000 records at once from a responder with three
    workers: each full page is read from the database once (without the cache, once per
    secondary), all three end equal to the primary row by row, and a live record is one
    message on the archive topic for all of them."""
    primary = rig.primary(broker, count=2000, batch_size=50, workers=3)
    stations = secondaries(rig, broker, 3)
    responder = rig.start_responder(primary)
    nodes = [rig.start_requester(s, wait=False) for s in stations]
    for node in nodes:
        node.wait_caught_up(60)
    for station in stations:
        assert station.count_records() == 2000
        assert_same(primary, station)

    counts = full_page_reads(reads)
    assert len(counts) == 2000 // PAGE
    assert set(counts.values()) == {1}, 'pages read more than once: %r' % counts
    assert responder.counters['pages_shared'] >= 2 * len(counts)

    # live records: one publish on the archive topic, whatever the number of secondaries
    published = []
    real_publish = responder.transport.publish

    def publish(topic, *args, **kwargs):
        published.append(topic)
        return real_publish(topic, *args, **kwargs)

    responder.transport.publish = publish
    ts = START + 2000 * STEP
    add_to_primary(primary, [new_record(ts)])
    record, prev, days = read_for_live(primary, ts)
    responder.publish_live(responder.bindings[KEY], record, prev, days)
    for node in nodes:
        node.wait_position(ts)
    assert published.count('replicate/archive/weewx') == 1
    for station in stations:
        assert_same(primary, station)


def test_a_record_that_arrived_since_is_not_hidden_by_the_cache(rig, broker, reads):
    """The first secondary's pages are shared with the second; a record stored between
    the two catch-ups reaches the second, because the tail of a catch-up (a short page,
    more=0) is never shared."""
    primary = rig.primary(broker, count=1450)        # 7 full pages and a tail of 50
    first, second = secondaries(rig, broker, 2)
    responder = rig.start_responder(primary)
    rig.start_requester(first).wait_caught_up(30)
    assert_same(primary, first)
    shared_before = responder.counters['pages_shared']

    add_to_primary(primary, [new_record(START + 1450 * STEP)])
    rig.start_requester(second).wait_caught_up(30)
    assert second.count_records() == 1451
    assert_same(primary, second)
    assert responder.counters['pages_shared'] - shared_before >= 1450 // PAGE
    assert set(full_page_reads(reads).values()) == {1}


def test_a_changed_past_reaches_secondaries(rig, broker, reads):
    """A record inserted into an old range on the primary (an import) after the range was
    shared: a repair (replace=1) sees it at once; a catch-up within the cache's expiry
    does not (the window docs/performance.md states), but its own verification repairs
    it; a catch-up after the expiry brings it; and a record older than the newest that
    goes through the engine (publish_live) makes the pages that cover it be read again."""
    clock = [1000.0]
    primary = rig.primary(broker, count=1450)
    first, second = secondaries(rig, broker, 2)
    (third,) = secondaries(rig, broker, 1, prefix='verifying', verify_days=7)
    responder = rig.start_responder(primary)
    responder.cache.clock = lambda: clock[0]            # time stands still for the cache
    rig.start_requester(first).wait_caught_up(30)
    assert_same(primary, first)

    since = START + 399 * STEP                           # the 3rd page: records 400..599
    inserted = since + STEP + STEP // 2                  # between records 400 and 401
    add_to_primary(primary, [new_record(inserted)])
    probe = Probe(rig, broker)
    repaired, _ = probe.page(since, replace=True)
    assert inserted in repaired and len(repaired) == PAGE
    shared, _ = probe.page(since)                        # the cached page, still valid
    assert inserted not in shared and len(shared) == PAGE

    # a catch-up from the cache misses it; the secondary's own verification (digests and
    # replace=1 are never shared) finds the day that differs and repairs it
    node = rig.start_requester(third)
    node.wait_caught_up(30)
    node.wait_verified(30)
    wait_until(lambda: third.count_records() == 1451, 20, 'the repair')
    assert_same(primary, third)

    clock[0] += responder.cache.ttl + 1                  # the cached pages expire
    mark = len(reads)
    rig.start_requester(second).wait_caught_up(30)
    assert second.count_records() == 1451
    assert_same(primary, second)

    # pages cached again (by the second's catch-up); another old record, through the engine
    older = START + 900 * STEP + STEP // 2
    add_to_primary(primary, [new_record(older)])
    page_since = max(s for s, until, limit, n in reads[mark:]
                     if until is None and n == PAGE and s < older)
    assert older not in probe.page(page_since)[0]
    record, prev, days = read_for_live(primary, older)
    responder.publish_live(responder.bindings[KEY], record, prev, days)
    assert older in probe.page(page_since)[0]
