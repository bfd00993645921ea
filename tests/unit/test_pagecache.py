"""pagecache.PageCache: bounded in bytes and pages, expiring, invalidated, single flight;
and responder.with_newest, which puts the primary's newest record on a shared page."""

import threading

from user.mqttreplicate import messages
from user.mqttreplicate.pagecache import WIRE_OVERHEAD, EncodedPage, PageCache
from user.mqttreplicate.responder import with_newest


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def page(size=1000, last=100, more=True, count=1):
    wires = [messages.Wire(b'x' * (size // count), [('seq', i)]) for i in range(count)]
    return EncodedPage(wires, 10, more, last)


def key(since, binding='weewx/wx_binding'):
    return (binding, since, None, 10, 1000, 262144, True)


def maker(p, keep=True):
    calls = []

    def make():
        calls.append(1)
        return p, keep
    return make, calls


def test_a_page_is_made_once_and_then_shared():
    cache = PageCache()
    make, calls = maker(page())
    first, shared = cache.fetch(key(0), make)
    again, shared_again = cache.fetch(key(0), make)
    assert calls == [1] and not shared and shared_again and again is first
    assert cache.counters['hits'] == 1 and cache.counters['misses'] == 1


def test_a_page_not_to_keep_is_made_for_every_request():
    """The tail of a catch-up (more=0) changes with the next record: never shared."""
    cache = PageCache()
    make, calls = maker(page(more=False), keep=False)
    cache.fetch(key(0), make)
    cache.fetch(key(0), make)
    assert calls == [1, 1] and len(cache) == 0


def test_the_bounds_hold_whatever_is_put():
    """At most max_pages pages and max_bytes bytes, the least recently used going first;
    a page larger than the whole cache is not kept."""
    size = 10000 - WIRE_OVERHEAD                     # each page counts 10,000 bytes
    cache = PageCache(max_bytes=35000, max_pages=5)
    for since in range(20):
        cache.fetch(key(since), maker(page(size))[0])
        assert len(cache) <= 5 and cache.bytes <= 35000
    assert sorted(k[1] for k in cache.entries) == [17, 18, 19]
    assert cache.bytes == 30000
    cache.fetch(key(17), maker(page(size))[0])       # used: 18 is now the oldest use
    cache.fetch(key(20), maker(page(size))[0])
    assert sorted(k[1] for k in cache.entries) == [17, 19, 20]
    cache.fetch(key(99), maker(page(40000))[0])      # too large for the cache
    assert key(99) not in cache.entries and cache.bytes == 30000

    small = PageCache(max_bytes=10 ** 9, max_pages=4)
    for since in range(10):
        small.fetch(key(since), maker(page(10))[0])
    assert len(small) == 4 and small.counters['evicted'] == 6


def test_pages_expire_after_ttl():
    clock = Clock()
    cache = PageCache(ttl=60, clock=clock)
    make, calls = maker(page())
    cache.fetch(key(0), make)
    clock.now += 59
    cache.fetch(key(0), make)
    assert calls == [1]
    clock.now += 2                                   # 61 s after it was read
    cache.expire()
    assert len(cache) == 0 and cache.bytes == 0
    cache.fetch(key(0), make)
    assert calls == [1, 1]


def test_invalidate_forgets_only_the_pages_that_cover_a_record():
    cache = PageCache()
    cache.fetch(key(0), maker(page(last=100))[0])
    cache.fetch(key(100), maker(page(last=200))[0])
    cache.fetch(key(0, 'weewx/other'), maker(page(last=200))[0])
    assert cache.invalidate('weewx/wx_binding', 150) == 1
    assert sorted(cache.entries) == sorted([key(0), key(0, 'weewx/other')])
    assert cache.invalidate('weewx/wx_binding', 300) == 0      # newer than every page
    assert cache.invalidate('weewx/other') == 1
    assert list(cache.entries) == [key(0)]


def test_concurrent_misses_read_once():
    """Single flight: while one worker reads a page, the others asking for it wait and
    share it."""
    cache = PageCache()
    release = threading.Event()
    calls = []

    def slow_make():
        calls.append(1)
        release.wait(5)
        return page(), True

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.fetch(key(0), slow_make)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    # the three others are waiting for the first one's read
    deadline = threading.Event()
    for _ in range(100):
        if len(calls) == 1 and all(t.is_alive() for t in threads):
            break
        deadline.wait(0.01)
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == [1]
    assert len(results) == 4 and len({id(p) for p, _ in results}) == 1
    assert sorted(shared for _, shared in results) == [False, True, True, True]


def test_when_the_first_read_fails_the_others_read_their_own():
    cache = PageCache()
    release = threading.Event()
    calls = []

    def failing_then_good():
        calls.append(1)
        if len(calls) == 1:
            release.wait(5)
            raise OSError('database gone')
        return page(), True

    errors, results = [], []

    def first():
        try:
            cache.fetch(key(0), failing_then_good)
        except OSError as e:
            errors.append(e)

    leader = threading.Thread(target=first)
    leader.start()
    for _ in range(100):
        if calls:
            break
        release.wait(0.01)
    follower = threading.Thread(target=lambda: results.append(
        cache.fetch(key(0), failing_then_good)))
    follower.start()
    release.wait(0.1)
    release.set()
    leader.join(5)
    follower.join(5)
    assert len(errors) == 1 and len(results) == 1 and len(calls) == 2
    assert not cache.flights


def test_with_newest_changes_only_the_last_message():
    wires = messages.Page('weewx/wx_binding', [{'dateTime': t, 'usUnits': 1}
                                               for t in range(1, 11)], True, 10, None
                          ).encode(4, 262144, False)
    assert len(wires) == 3
    sent = with_newest(wires, 12345)
    assert sent[:2] == wires[:2] and sent[2].payload == wires[2].payload
    props = dict(sent[2].properties)
    assert props['newest'] == 12345 and props['more'] == 1 and props['last'] == 10
    assert [n for n, _ in sent[2].properties] == [n for n, _ in wires[2].properties]
    assert dict(wires[2].properties)['newest'] == 0          # the shared one is unchanged


def test_a_page_read_while_an_older_record_is_stored_is_not_kept():
    """The race of issue 19: a worker reads a page, an older record is stored and the
    cache invalidated (nothing cached yet), then the worker's page would be kept and shared
    for up to TTL without that record. It is served to its requester and not kept."""
    cache = PageCache()
    stale = page(last=100)

    def make():
        assert cache.invalidate('weewx/wx_binding', 50) == 0
        return stale, True
    got, shared = cache.fetch(key(0), make)
    assert got is stale and not shared and len(cache) == 0
    fresh, calls = maker(page(last=100))
    assert cache.fetch(key(0), fresh)[1] is False and calls == [1]
    assert cache.fetch(key(0), fresh)[1] is True          # a page read afterwards is kept
    # another binding's invalidation does not concern it
    cache.clear()

    def make_other():
        cache.invalidate('weewx/other', 50)
        return page(last=100), True
    cache.fetch(key(0), make_other)
    assert len(cache) == 1


def test_invalidate_covers_the_days_a_page_brings_from_before_its_since():
    """A page since 500 that brings the daily summaries from 200 on: a record stored at 300
    changes those summaries, so the page goes."""
    cache = PageCache()
    cache.put(key(500), EncodedPage([messages.Wire(b'x', [])], 10, True, 900, first=200))
    cache.put(key(900), EncodedPage([messages.Wire(b'x', [])], 10, True, 1300, first=900))
    assert cache.invalidate('weewx/wx_binding', 100) == 0
    assert cache.invalidate('weewx/wx_binding', 300) == 1
    assert len(cache) == 1
