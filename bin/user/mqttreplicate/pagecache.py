"""Encoded catch-up pages shared by the secondaries that ask for the same range.

Ten or twenty secondaries catching up at once ask, page after page, for the same ranges:
without sharing, the primary reads and encodes each page once per secondary. PageCache
keeps the encoded batches ([messages.Wire]) of recent pages so that the first request for
a page reads and encodes it and the others only publish it; the CorrelationData and the
response topic of each request go in Transport.publish, not in the Wire, so one Wire
serves every requester. Each secondary still gets a page only when it asks for it (the
pull-based bound, SPEC 5.3, is unchanged).

What may be kept, and for how long, is the responder's to decide (Responder._serve): only
full pages (more=1), which new records do not change, and for TTL seconds at most, so that
a past changed behind the cache's back (an import, a backfill) is seen by the next catch-up
after TTL. Requests for repairs (replace=1) and digests never come here.

Bounds (a Raspberry Pi runs the primary): at most MAX_BYTES of payload and MAX_PAGES
pages; the least recently used page goes first; a page larger than MAX_BYTES is not kept.

Single flight: when several workers miss the same key at once, the first reads and
encodes; the others wait for it (FLIGHT_WAIT at most) and then share its page, or, if it
could not be kept, read their own.
"""

import collections
import threading
import time

MAX_BYTES = 16 * 1024 * 1024   # ~19 pages of 5,000 records (about 170 bytes a record)
MAX_PAGES = 64
TTL = 60.0                     # seconds a page is shared at most
FLIGHT_WAIT = 30.0             # longest wait for another worker reading the same page
WIRE_OVERHEAD = 256            # bytes counted per message beyond its payload (properties)


class EncodedPage:
    """A page as the responder publishes it: its batches, and what its end says."""

    __slots__ = ('wires', 'count', 'more', 'last', 'size', 'born', 'first')

    def __init__(self, wires, count, more, last, first=None):
        """first: the oldest dateTime whose change changes the page (its since, or the
        start of the first day of the daily summaries it brings, if older)."""
        self.wires = wires
        self.count = count
        self.more = more
        self.last = last
        self.first = first
        self.size = sum(len(w.payload) + WIRE_OVERHEAD for w in wires)
        self.born = None


class PageCache:
    """Bounded, expiring, thread-safe map of page key -> EncodedPage with single flight.

    A key is (binding key, since, until, limit, encoding parameters...): its first two
    items are the binding and since (invalidate() relies on it)."""

    def __init__(self, max_bytes=MAX_BYTES, max_pages=MAX_PAGES, ttl=TTL,
                 clock=time.monotonic, flight_wait=FLIGHT_WAIT):
        self.max_bytes = max_bytes
        self.max_pages = max_pages
        self.ttl = ttl
        self.clock = clock
        self.flight_wait = flight_wait
        self.lock = threading.Lock()
        self.entries = collections.OrderedDict()    # key -> EncodedPage, oldest use first
        self.flights = {}                           # key -> Event set when its read ends
        self.bytes = 0
        self.generations = collections.Counter()    # binding -> invalidations so far
        self.counters = {'hits': 0, 'misses': 0, 'kept': 0, 'evicted': 0, 'expired': 0,
                         'invalidated': 0}

    def __len__(self):
        return len(self.entries)

    def fetch(self, key, make):
        """(page, shared): the page of key from the cache (shared True), or from
        make() -> (EncodedPage, keep), kept if keep and it fits. make() runs without the
        lock, at most once at a time per key while others wait for it."""
        waited = False
        while True:
            with self.lock:
                page = self._get(key)
                if page is not None:
                    self.counters['hits'] += 1
                    return page, True
                flight = self.flights.get(key)
                if flight is None or waited:
                    self.counters['misses'] += 1
                    lead = flight is None
                    if lead:
                        flight = self.flights[key] = threading.Event()
                    break
            # another worker reads this page now: wait for it, look again once
            flight.wait(self.flight_wait)
            waited = True
        if not lead:                     # the leader's page could not be kept: our own
            page, _ = make()
            return page, False
        try:
            with self.lock:
                generation = self.generations[key[0]]
            page, keep = make()
            with self.lock:
                # a page read while an older record was stored may miss it: not kept
                keep = keep and self.generations[key[0]] == generation
            if keep:
                self.put(key, page)
            return page, False
        finally:
            with self.lock:
                self.flights.pop(key, None)
            flight.set()

    def put(self, key, page):
        """Keep a page (replacing one of the same key) if it fits; evict the least recently
        used pages to stay within the bounds."""
        if page.size > self.max_bytes or self.max_pages < 1:
            return
        with self.lock:
            page.born = self.clock()
            self._drop(key)
            self.entries[key] = page
            self.bytes += page.size
            self.counters['kept'] += 1
            while len(self.entries) > self.max_pages or self.bytes > self.max_bytes:
                self._drop(next(iter(self.entries)))
                self.counters['evicted'] += 1

    def invalidate(self, binding, ts=None):
        """Forget the pages of binding that cover ts (since < ts <= last, or, for a page
        that brings daily summaries from before its since, their first day < ts <= last),
        or all of its pages when ts is None: a record older than the newest arrived (a
        backfill). A page being read meanwhile is not kept. Returns how many were
        forgotten."""
        with self.lock:
            self.generations[binding] += 1
            stale = [k for k, page in self.entries.items() if k[0] == binding
                     and (ts is None or min(k[1], page.first if page.first is not None
                                            else k[1]) < ts <= page.last)]
            for key in stale:
                self._drop(key)
            self.counters['invalidated'] += len(stale)
            return len(stale)

    def expire(self):
        """Forget the pages older than ttl (also done on every fetch)."""
        with self.lock:
            self._expire()

    def clear(self):
        with self.lock:
            self.entries.clear()
            self.bytes = 0

    # --- under the lock ----------------------------------------------------------------------

    def _get(self, key):
        self._expire()
        page = self.entries.get(key)
        if page is not None:
            self.entries.move_to_end(key)
        return page

    def _expire(self):
        if not self.entries:
            return
        oldest = self.clock() - self.ttl
        stale = [k for k, page in self.entries.items() if page.born <= oldest]
        for key in stale:
            self._drop(key)
        self.counters['expired'] += len(stale)

    def _drop(self, key):
        page = self.entries.pop(key, None)
        if page is not None:
            self.bytes -= page.size
