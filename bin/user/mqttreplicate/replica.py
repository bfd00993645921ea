"""One replicated binding on a secondary: the catch-up and the following of live records.

A Replica is a state machine with one explicit State. It runs on the thread that owns the
binding's database (the engine thread for `main` under weewxd, a Writer thread otherwise);
the MQTT loop thread only posts decoded messages to its inbox. It talks to the broker
through a narrow Link and writes through a Sink, so both can be faked in tests.

    STARTING --start_catchup--> ASKING --first page or protocol-1 record--> RECEIVING
    ASKING/RECEIVING --last page, or a protocol-1 round that brought nothing--> LIVE
    ASKING --nobody answered for startup_max_tries x startup_wait_before_retry--> UNANSWERED
    ASKING/RECEIVING --error reply--> REFUSED
    LIVE/UNANSWERED/REFUSED --connection, hole before a live record, responder back--> ASKING

The catch-up (CatchUp: page flow, pages being assembled, live records held meanwhile) is
apart from the following of live records (Replica._on_live: the `prev` hole check), and
the earlier extension's answers (LegacyRound) apart from both.
"""

import collections
import dataclasses
import enum
import logging
import queue
import threading
import time

from . import daypatch
from .database import day_start, day_stop, read_days
from .faults import is_termination
from .summaries import DayRows
from .verify import AutoVerifier

log = logging.getLogger(__name__)

ACK_INTERVAL = 1.0       # acknowledge stored records at most this often
PIPELINE = 2             # pages outstanding at most (one being stored, one in flight)
MAX_HELD_LIVE = 2000     # live records kept aside during a catch-up (the newest ones)
POST_TIMEOUT = 10.0      # the loop thread waits this long for room in an inbox, then drops
MAX_LEGACY = 5000        # protocol-1 records received and not stored yet
MAX_PATCH_MISSES = 3     # summaries patches in a row that did not fit: whole days instead
MAX_PATCH_BEHIND = 10    # live records in a row whose day was not here yet: the same
PATCH_BEHIND = 'behind'  # Sink.patch_miss: the day here was not the primary's yet
PATCH_DIFFERS = 'differs'    # ... it was, and the patch did not give the primary's


class State(enum.Enum):
    STARTING = 'starting'        # no catch-up asked for yet
    ASKING = 'asking'            # a catch-up asked for, no answer yet
    RECEIVING = 'receiving'      # the responder answers the catch-up
    LIVE = 'live'                # caught up: following live records
    UNANSWERED = 'unanswered'    # nobody answered the catch-up: following live records
    REFUSED = 'refused'          # the responder refused the catch-up


CATCHING_UP = (State.ASKING, State.RECEIVING)


class Item:
    """Something for a replica's owning thread to do, posted by the loop thread."""
    __slots__ = ('kind', 'body', 'correlation', 'message', 'replica', 'acked')

    def __init__(self, kind, body=None, correlation=None, message=None):
        self.kind = kind     # 'batch', 'refused', 'live', 'verify'; 'wake': look at the flags
        self.body = body     # the decoded message: Batch, ErrorReply, LiveRecord, ...
        self.correlation = correlation
        self.message = message         # paho's message, to acknowledge once stored
        self.replica = None
        self.acked = False


class Link:
    """What a replica needs of the broker (the Requester implements it; tests fake it)."""

    def connected(self):
        raise NotImplementedError

    def send_records(self, binding, since, until=None, replace=False, correlation=None,
                     days=None):
        """Ask for a page of records newer than since (and the daily summaries from the day
        of `days` on, if not None); returns the answer's correlation."""
        raise NotImplementedError

    def send_digest(self, binding, since, until, bucket, columns, correlation=None,
                    summaries=False, null_inf=False):
        """Ask for the digest of a range (with the daily summaries' if summaries, an
        infinity as NULL if null_inf)."""
        raise NotImplementedError

    def send_ack(self, replica):
        """Tell the responder the replica's position and how many records it stored."""
        raise NotImplementedError

    def ack(self, message):
        """Acknowledge a received MQTT message (its slot in the session's window)."""
        raise NotImplementedError

    def silence(self, instance):
        """What was seen of the instance's responder, and why it may not answer."""
        return 'nothing is known of the responder'

    def responder_online(self, instance):
        """Does the instance's responder's own status say it is online (a protocol-2
        responder, there: a slow one, not an absent one)?"""
        return False


class Sink:
    """Where a binding's records go, and the replicated position (the newest dateTime
    stored). Records are stored in the binding's database, in bulk or one by one; with
    deliver (the main binding under weewxd) the newest ones are handed to the engine
    instead, in dateTime order, so its services and reports see them."""

    def __init__(self, key, open_store, deliver=None, progress=None):
        self.key = key
        self.open_store = open_store
        self.deliver = deliver
        self.progress = progress or (lambda count: None)
        self.store = None
        self.position = 0
        self.stored = 0                # records stored since start
        self.summaries = None          # 'copied' from the primary, or 'rebuilt' here
        self.summaries_why = None      # why rebuilt
        # why the last live record's patch gave no day here: None (it did, or there was
        # none), BEHIND (the day here was not the primary's yet) or DIFFERS (it was, and
        # the result was not the primary's); and how many of each in a row
        self.patch_miss = None
        self.patch_misses = collections.Counter()

    def open(self):
        if self.store is None:
            self.store = self.open_store()
            self.position = self.store.newest()
        return self.store

    def close(self):
        if self.store is not None:
            try:
                self.store.finish_bulk()
            finally:
                self.store.close()
                self.store = None

    @property
    def engine(self):
        return self.deliver is not None

    def store_bulk(self, records, days=None):
        """Store records newer than the position in one go, with the primary's daily
        summaries of their days (days, a summaries.DayRows) in the same transaction if they
        can be stored as they are. (count stored, whether the summaries were)."""
        if not records:
            return 0, False
        prepared = self.store.prepare_bulk(records, self.key)
        stamps = prepared.column('dateTime')
        days = days if self._fits(days, min(stamps)) else None
        count = self.store.store_bulk(prepared, days)
        self._stored(count, stamps[-1])
        return count, days is not None

    def store_one(self, record, days=None, patch=None):
        """Store one record (or hand it to the engine), then its day's daily summaries as
        the primary has them (days, a summaries.DayRows; or patch, a summaries.DayPatch of
        the rows here), if any. True if it was new. The engine sees records strictly in
        dateTime order: an older one (a protocol-1 redelivery, a primary whose clock
        stepped back) is stored here."""
        self.patch_miss = None
        record = self.store.prepare(record, self.key)
        ts = record['dateTime']
        if ts <= self.position and self.store.existing(ts, ts):
            log.debug('requester: %s: record %s is already here', self.key, ts)
            return False
        # the summaries' fit checked once, before the record is stored (which changes
        # nothing it depends on), with the bulk stores' summaries done first, as storing does
        self.store.finish_bulk()
        if patch is not None:
            days = self._patched(patch, record)
        days = days if self._fits(days) else None
        if self.deliver is not None and ts > self.position:
            if self.deliver(record, days) is False:
                return False
        elif not self.store.store_one(record):
            return False
        self._stored(1, ts)
        if days is not None:
            self.store.write_days(days)
        return True

    def _patched(self, patch, record):
        """The primary's DayRows of a live record's day from its patch and the rows of
        that day here, before the record is stored; None if they cannot be copied here
        (rebuilt) or the result would not be the primary's (patch_miss says why)."""
        if not self.store.has_summaries or self.summaries == 'rebuilt':
            return None
        if self.store.copied() < self.position:
            # the day here is not the primary's through the record before (a catch-up
            # whose last day a newer record cut, a day built here): a catch-up brings it
            return self._missed(PATCH_BEHIND)
        ts = record['dateTime']
        try:
            base = read_days(self.store.manager, day_start(ts), day_stop(ts),
                             units=record.get('usUnits'))
            if base is not None and (base.units, base.version) != (patch.units,
                                                                  patch.version):
                return None            # not copied here: a catch-up's days say why
            days = daypatch.apply(patch, base, record)
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('requester: %s: summaries patch of %s not applied: %s: %s', self.key,
                      ts, type(e).__name__, e)
            days = None
        if days is None:
            return self._missed(PATCH_DIFFERS)
        self.patch_misses.clear()
        return days

    def _missed(self, why):
        self.patch_miss = why
        self.patch_misses[why] += 1
        return None

    @property
    def wants_days(self):
        """Should catch-ups ask for the primary's daily summaries? Not once they were
        found unusable here (any thread)."""
        return self.summaries != 'rebuilt'

    def store_days(self, days):
        """Store the primary's daily summaries (a summaries.DayRows, or None) as they are,
        after the records of their days. True if stored."""
        if not self._fits(days):
            return False
        self.store.write_days(days)
        return True

    def _fits(self, days, oldest=None):
        """Can the primary's daily summaries be stored here now (TargetDatabase.days_fit,
        with records from `oldest` on about to be stored)?"""
        return self._usable(days) and self.store.days_fit(days, oldest)

    def _usable(self, days):
        """Can the primary's daily summaries be right here? If not, say why once: the
        summaries are then built here from the archive."""
        if days is None or not self.store.has_summaries:
            return False
        why = self.store.days_mismatch(days)
        if why is not None:
            if why != self.summaries_why:
                log.info('requester: %s: daily summaries are rebuilt here from the archive, '
                         'not copied from the primary: %s', self.key, why)
            self.summaries, self.summaries_why = 'rebuilt', why
            return False
        self.summaries = 'copied'
        return True

    def _stored(self, count, newest):
        self.stored += count
        self.position = max(self.position, newest)
        self.progress(count)

    def finish(self):
        """End a bulk load (the summaries of its days)."""
        self.store.finish_bulk()


class Acks:
    """When to tell the responder where we are: after something was stored, at most once
    per ACK_INTERVAL; at once when forced (the end of a catch-up)."""

    def __init__(self, send):
        self.send = send
        self.pending = False
        self.last = 0.0

    def due(self):
        self.pending = True

    def flush(self, force=False):
        now = time.monotonic()
        if not self.pending or (not force and now - self.last < ACK_INTERVAL):
            return
        self.pending = False
        self.last = now
        self.send()


class PageFlow:
    """Which pages of one binding are outstanding; asks for the next one (pull-based)."""

    def __init__(self, send):
        self.send = send               # send(since, until) -> correlation
        self.lock = threading.Lock()
        self.outstanding = []          # correlations requested and not consumed yet
        self.since = {}                # correlation -> since it asked for
        self.ended = set()             # correlations whose end message was seen
        self.deferred = None           # since of the next page, waiting for room
        self.until = None

    def _ask(self, since):
        correlation = self.send(since, self.until)
        self.outstanding.append(correlation)
        self.since[correlation] = since

    def start(self, since, until=None):
        with self.lock:
            self._reset()
            self.until = until
            self._ask(since)

    def stop(self):
        with self.lock:
            self._reset()

    def _reset(self):
        self.outstanding = []
        self.since = {}
        self.ended = set()
        self.deferred = None

    def is_current(self, correlation):
        with self.lock:
            return correlation in self.outstanding

    def first(self):
        """The oldest outstanding page: the only one whose records may be stored now."""
        with self.lock:
            return self.outstanding[0] if self.outstanding else None

    def on_end(self, correlation, more, last):
        """A page's last message arrived (loop thread): ask for the next one if there is
        room. Returns False for an end that cannot be right: more=1 with a `last` that is
        missing or does not advance past the page's since (or beyond until). A repeated
        end (a QoS 1 duplicate) asks for nothing."""
        with self.lock:
            if correlation not in self.outstanding or correlation in self.ended:
                return True
            if more and (last is None or last <= self.since[correlation]
                         or (self.until is not None and last > self.until)):
                return False
            self.ended.add(correlation)
            if not more:
                return True
            if len(self.outstanding) < PIPELINE:
                self._ask(last)
            else:
                self.deferred = last
            return True

    def consumed(self, correlation):
        """The owning thread stored a whole page."""
        with self.lock:
            if correlation in self.outstanding:
                self.outstanding.remove(correlation)
                self.since.pop(correlation, None)
                self.ended.discard(correlation)
            if self.deferred is not None and len(self.outstanding) < PIPELINE:
                self._ask(self.deferred)
                self.deferred = None


class CatchUp:
    """The protocol-2 catch-up of one binding: the pages asked for (PageFlow), the messages
    of each page put back in seq order, and the live records held until it is over."""

    def __init__(self, send):
        self.flow = PageFlow(send)
        self.pages = {}                # correlation -> {'next': seq, 'held': {seq: Batch}}
        self.held_live = collections.deque(maxlen=MAX_HELD_LIVE)   # the newest are kept

    def start(self, since, connected):
        self.pages = {}
        if connected:                  # else asked on the next connection
            self.flow.start(since)

    def stop(self):
        """The catch-up is over: the live records held meanwhile, oldest first."""
        self.flow.stop()
        self.pages = {}
        held = sorted(self.held_live, key=lambda item: item.body.record['dateTime'])
        self.held_live.clear()
        return held

    def add(self, correlation, batch):
        """A message of a page. False if it belongs to no current page or came twice."""
        if not self.flow.is_current(correlation):
            return False
        page = self.pages.setdefault(correlation, {'next': 0, 'held': {}})
        if batch.seq < page['next'] or batch.seq in page['held']:
            return False
        page['held'][batch.seq] = batch
        return True

    def next_ready(self):
        """The next message to store, or None: strictly in the order the pages were asked
        for, each page in seq order; nothing is stored past a message still missing (a page
        that never completes times out and the catch-up starts again from what is
        stored)."""
        correlation = self.flow.first()
        page = self.pages.get(correlation) if correlation is not None else None
        if page is None or page['next'] not in page['held']:
            return None
        batch = page['held'].pop(page['next'])
        page['next'] += 1
        return batch

    def stored(self, batch):
        """A message next_ready() gave was stored. After a page's last one, the next page
        may be asked for."""
        if batch.end:
            correlation = self.flow.first()
            del self.pages[correlation]
            self.flow.consumed(correlation)


class LegacyRound:
    """An answer of the earlier extension's responder (protocol 1): records flooded at full
    speed, without pages and without an end. They are kept here by the loop thread (never
    waiting, so the broker never has to queue them for us) and stored in bulk by the owning
    thread; the round is over when nothing came for a while."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = collections.deque()  # received, not stored yet
        self.partial = False           # records of this round were dropped here
        self.seen = 0.0                # when a protocol-1 message last arrived
        self.new = 0                   # records this round stored
        self.newest = None             # held back to go through the engine last
        self.suspect = None            # before the earliest gap among new records
        self.filled = []               # holes filled this round: (dateTime, record)

    def post(self, records):
        """Keep records (loop thread). Once records had to be dropped, the rest of the round
        is dropped too: what is kept is always the oldest part, and the next round asks
        again from the newest record stored. True if the owning thread should wake up."""
        self.seen = time.monotonic()
        with self.lock:
            if self.partial or len(self.records) + len(records) > MAX_LEGACY:
                self.partial = True
                return False
            wake = not self.records
            self.records.extend(records)
        return wake

    def take(self):
        """The records received so far, oldest first, each dateTime once; if there are any,
        the one held back for the engine with them."""
        with self.lock:
            records = list(self.records)
            self.records.clear()
        if not records:
            return records             # (the one held back waits for the round's end)
        if self.newest is not None:
            records.append(self.newest)
            self.newest = None
        unique = {r['dateTime']: r for r in records}
        return [unique[ts] for ts in sorted(unique)]

    def begin(self):
        """A new round starts (a new request)."""
        with self.lock:
            self.partial = False
        self.new = 0

    def was_partial(self):
        with self.lock:
            return self.partial

    def forget_gaps(self):
        self.suspect = None
        self.filled = []

    def note_gap(self, before, ts, record):
        """Note a gap between `before` (a stored record's dateTime, or 0) and the new record
        at ts longer than the record's interval: records a broker dropped in the middle of
        an answer (its queue for us overflowed), or a real outage of the primary."""
        if before and ts - before > record.get('interval', 0) * 60:
            self.suspect = before if self.suspect is None else min(self.suspect, before)


class Replica:
    """One replicated binding. All methods but post(), want_catchup() and post_legacy()
    (the loop thread's) run on the thread that owns the binding's database.

    host: the Requester. Its options, faults (a RateLimitedLog), link (a Link), stopping
    (an Event), count(name) and progress(count) are all a replica uses of it."""

    def __init__(self, host, binding, inbox, open_store, deliver=None):
        """open_store() -> TargetDatabase, called on the owning thread.
        deliver(record): hands a record to the engine instead of storing it (main binding
        under weewxd); None stores directly."""
        self.host = host
        self.options = host.options
        self.faults = host.faults
        self.link = host.link
        self.binding = binding
        self.key = binding.key
        self.inbox = inbox
        self.sink = Sink(self.key, open_store, deliver, host.progress)
        self.state = State.STARTING
        self.refusal = None                    # the responder's error, if it refused us
        self.responder_protocol = 2            # 1 once the responder answered in protocol 1
        self.catchup = CatchUp(self._send_request)
        self.legacy_round = LegacyRound()
        self.catchup_wanted = False            # the loop thread asks for a catch-up
        self.caught_up = threading.Event()     # set after the first complete catch-up
        self.last_progress = time.monotonic()
        self.asked_at = self.last_progress     # when the catch-up was first asked for
        self.acks = Acks(lambda: self.link.send_ack(self))
        self.primary_newest = None
        self.acknowledged = None               # our newest record, as the responder knows it
        self.last_contact = None               # when the responder last sent us something
        self.rejected = 0                      # messages of this binding rejected
        self.days_from = None                  # (since, day) of a catch-up's first page
        self.page_days = []                    # the daily summaries of the page being stored
        self.verifier = AutoVerifier(self)

    # --- what others read ----------------------------------------------------------------------

    @property
    def store(self):
        return self.sink.store

    @property
    def position(self):
        """The newest dateTime stored here: where the next catch-up starts."""
        return self.sink.position

    @property
    def stored(self):
        return self.sink.stored

    @property
    def catching_up(self):
        return self.state in CATCHING_UP

    @property
    def unanswered(self):
        return self.state is State.UNANSWERED

    @property
    def refused(self):
        return self.refusal if self.state is State.REFUSED else None

    @property
    def legacy(self):
        return self.responder_protocol == 1

    @property
    def busy(self):
        """No verification now: catching up, or the responder speaks protocol 1."""
        return self.catching_up or self.legacy

    def status_changed(self):
        """Something the status shows changed: tell the responder (and publish it) soon."""
        self.acks.due()

    # --- loop thread -------------------------------------------------------------------------

    def _send_request(self, since, until):
        return self.link.send_records(self.binding, since, until, days=self.days_wanted(since))

    def days_wanted(self, since):
        """From where a page since `since` should bring the primary's daily summaries (None:
        none). The first page of a catch-up from where the summaries here are complete (a
        bulk store whose summaries never came, a live record's day the engine updated last);
        the others from since, the day the page before left out."""
        store = self.sink.store
        if store is None or not store.has_summaries or not self.sink.wants_days:
            return None
        first = self.days_from
        return first[1] if first is not None and first[0] == since else since

    def post(self, item):
        """Hand an item to the owning thread. Waits a while for room (the inbox is bounded);
        an item that finds none is dropped: a page that misses a message is asked for
        again, a live record's hole is found by the next one's prev. While stopping it
        does not wait (nobody empties the inbox any more), and leaves a dropped message
        unacknowledged, for the session to deliver again."""
        item.replica = self
        stopping = self.host.stopping.is_set()
        try:
            self.inbox.put(item, timeout=None if stopping else POST_TIMEOUT,
                           block=not stopping)
            return True
        except queue.Full:
            self.host.count('dropped')
            if stopping:
                return False
            self.faults(logging.WARNING, 'inbox-full', 'requester: %s: %d items wait for the '
                        'database; one dropped (it will be asked for again)', self.key,
                        self.inbox.maxsize)
            if item.message is not None:
                self.link.ack(item.message)
            return False

    def post_batch(self, correlation, batch):
        """A message of a catch-up page. False for a page end that cannot be right (the
        message is rejected and the page asked for again)."""
        flow = self.catchup.flow
        if not flow.is_current(correlation):
            log.debug('requester: %s: discarded a message of an old request', self.key)
            return True
        if batch.end and not flow.on_end(correlation, batch.more, batch.last):
            return False
        self.post(Item('batch', batch, correlation))
        return True

    def wake(self):
        """Have the owning thread look at what is due soon (any thread)."""
        self._wake()

    def _wake(self):
        item = Item('wake')
        item.replica = self
        try:
            self.inbox.put_nowait(item)
        except queue.Full:
            pass                       # the owning thread looks at its next idle()

    def want_catchup(self):
        """Ask the owning thread for a catch-up (after a connection, or when the responder
        is back). A flag, not an inbox item: it cannot be dropped."""
        self.catchup_wanted = True
        self._wake()

    def post_legacy(self, records):
        """Protocol-1 records arrived: keep them for the owning thread."""
        if self.legacy_round.post(records):
            self._wake()

    # --- owning thread -----------------------------------------------------------------------

    def open(self):
        return self.sink.open()

    def close(self):
        """Close the database (the daily summaries of a bulk load first). Never raises: a
        failure is logged, and the next open() opens a new connection."""
        try:
            self.sink.close()
        except Exception as e:
            if is_termination(e):
                raise
            log.error('requester: %s: closing the database: %s: %s', self.key,
                      type(e).__name__, e)
        finally:
            self.sink.store = None

    def recover(self):
        """The owning thread failed while handling something of ours: whatever was being
        stored may be half done. Close the database (the next item opens it again, on a
        new connection) and catch up again from what it holds."""
        self.close()
        self.catchup_wanted = True

    def handle(self, item):
        """Process one inbox item."""
        self.open()
        self._take_catchup_request()
        if item.kind == 'batch':
            if self.catchup.add(item.correlation, item.body):
                self._drain_pages()
            else:
                log.debug('requester: %s: duplicate or old message of a page', self.key)
        elif item.kind == 'refused':
            if self.catchup.flow.is_current(item.correlation):
                self._on_refused(item.body.error)
        elif item.kind == 'live':
            self._on_live(item)
        elif item.kind == 'verify':
            self.verifier.on_answer(item.correlation, item.body)
        else:                          # 'wake'
            self._store_legacy()

    def _take_catchup_request(self):
        if self.catchup_wanted:
            self.catchup_wanted = False
            self.start_catchup()

    def idle(self):
        """Called when the inbox was quiet for a while: timeouts and acks."""
        self.open()
        self._take_catchup_request()
        self._store_legacy()
        options = self.options
        if self.catching_up:
            patience = options.startup_max_tries * options.startup_wait_before_retry
            # a protocol-1 answer is over when nothing arrived for a while, stored or not
            quiet = time.monotonic() - max(self.last_progress, self.legacy_round.seen)
            if self.legacy and quiet >= patience:
                self._legacy_round_done(quiet)
            elif self.state is State.ASKING and self.link.connected() \
                    and self._gave_up_asking(quiet, patience):
                # No responder (or a protocol-1 one with nothing to send). Carry on live;
                # the next live record's `prev` or the next connection starts a catch-up.
                self.faults(logging.WARNING, 'unanswered',
                            'requester: %s: no answer from the responder for %.0f s; carrying '
                            'on with live records: %s', self.key, quiet,
                            self.link.silence(self.binding.instance))
                self._catchup_done(State.UNANSWERED)
            elif quiet >= options.page_timeout or (
                    self.state is State.ASKING and quiet >= patience
                    and self.link.responder_online(self.binding.instance)):
                # (a request to a responder that is online but silent may have been lost:
                # asked again after the start-up patience, not after a whole page_timeout)
                log.warning('requester: %s: no answer for %.0f s; asking again since %s',
                            self.key, quiet, self.position)
                self.start_catchup()
        else:
            self.verifier.tick()
        self.flush_ack()

    def _gave_up_asking(self, quiet, patience):
        """Has the catch-up been asked for long enough without an answer? A responder
        whose own status says it is online may only be busy (one worker, many
        secondaries): it gets startup_max_tries x page_timeout (asked again after each
        start-up patience) before it is taken for one that does not answer."""
        if not self.link.responder_online(self.binding.instance):
            return quiet >= patience
        options = self.options
        waited = time.monotonic() - self.asked_at
        return waited >= max(patience, options.startup_max_tries * options.page_timeout)

    def flush_ack(self, force=False):
        self.acks.flush(force)

    # --- the catch-up ------------------------------------------------------------------------

    def start_catchup(self, since=None):
        """Ask for everything newer than the newest record stored (or than since)."""
        if self.state is not State.ASKING:
            self.asked_at = time.monotonic()   # (a page asked for again keeps it)
        self.state = State.ASKING
        self.refusal = None
        self.verifier.cancel()
        self._store_legacy()
        self.legacy_round.begin()
        self.last_progress = time.monotonic()
        since = self.position if since is None else since
        self.page_days = []
        store = self.sink.store
        # the first page brings the primary's summaries from where they were last copied
        # (TargetDatabase.copied: an interrupted catch-up, a rebuild, kill -9 left the days
        # after it built here)
        self.days_from = (since, store.days_wanted(since)) \
            if store is not None and store.has_summaries else None
        if self.link.connected():
            log.debug('requester: %s: catching up since %s', self.key, since)
        self.catchup.start(since, self.link.connected())

    def _catchup_done(self, outcome=State.LIVE):
        self.state = outcome
        self.legacy_round.forget_gaps()
        held = self.catchup.stop()
        self._release_legacy_newest()
        self.sink.finish()
        # In dateTime order: deliveries reordered by reconnections close their own holes.
        for item in held:
            self._on_live(item)
        if self.state is State.LIVE:           # (a held record may have found a hole)
            self.caught_up.set()
            self.verifier.schedule()
        self.acks.due()            # tell the responder where we are, even if nothing came
        self.flush_ack(force=True)

    def _on_refused(self, error):
        self.refusal = error
        self.faults(logging.ERROR, 'refused-' + self.key,
                    "requester: %s: the responder refused the catch-up: %s; check that the "
                    "primary's [[Responder]] has the instance [[[%s]]] with the binding "
                    "[[[[%s]]]] (names as in this station's [[Requester]]) and that enable = "
                    "true", self.key, error, self.binding.instance, self.binding.name)
        self._catchup_done(State.REFUSED)

    def _drain_pages(self):
        while self.catching_up:
            batch = self.catchup.next_ready()
            if batch is None:
                return
            self._store_batch(batch)
            self.catchup.stored(batch)
            if not batch.end:
                continue
            if batch.newest:
                self.primary_newest = max(self.primary_newest or 0, batch.newest)
            if not batch.more:
                log.debug('requester: %s: caught up at %s', self.key, self.position)
                self._catchup_done()

    def _store_batch(self, batch):
        self.last_progress = time.monotonic()
        self.state = State.RECEIVING
        self.responder_protocol = 2    # a protocol-2 page: the responder was upgraded
        if batch.days is not None:     # stored after the page's records
            self.page_days.append(batch.days)
            return
        records = batch.records
        days = None
        if batch.end:
            days, self.page_days = DayRows.merge(self.page_days), []
        if self.sink.engine and self.options.catchup == 'engine':
            for record in records:
                self._store_one(record)
            self._store_days(days)
            return
        newest = None
        if self.sink.engine and batch.end and not batch.more and records:
            # The newest record goes through the engine, so its services and reports see it.
            records, newest = records[:-1], records[-1]
        # the engine adds the newest record to its day's summaries: that day is stored as
        # the primary has it after the engine stored the record
        cut = day_start(newest['dateTime']) if newest is not None else None
        before = days.only(days.first, cut) if days is not None and cut else days
        if records:
            _, stored = self.sink.store_bulk(records, before)
            self.acks.due()
            if not stored and before is not None:
                self.sink.finish()     # built here now, so the next page's can be stored
        else:
            self._store_days(before)
        if newest is None:
            return
        self.sink.finish()
        # (through the newest record: on a relay its responder sends them on with it)
        self._store_one(newest, dataclasses.replace(days.only(cut, days.stop),
                                                    through=newest['dateTime'])
                        if days is not None else None)

    def _store_days(self, days):
        """The daily summaries of a page, after its records. Summaries that could not be
        stored are built here now, so those of the next page can be."""
        if days is not None and not self.sink.store_days(days):
            self.sink.finish()

    def _store_one(self, record, days=None, patch=None):
        if not self.sink.store_one(record, days, patch):
            return False
        self.acks.due()
        return True

    def _patch_missed(self, ts):
        """A live record's summaries patch gave no day here: a catch-up brings the days
        from where they were last copied. Expected when the day here was not the primary's
        yet; if it was, the result differed (a hand edit here, or WeeWX updates a day
        otherwise here): after MAX_PATCH_MISSES of those in a row, the responder is told
        (our status) to send whole days."""
        misses = self.sink.patch_misses
        if self.sink.patch_miss == PATCH_BEHIND:
            log.debug('requester: %s: the day of record %s is not the primary\'s here yet; '
                      'asking for it', self.key, ts)
            if misses[PATCH_BEHIND] >= MAX_PATCH_BEHIND:
                # (catch-ups whose last day is cut again and again: a primary that stores
                # records faster than a page goes, or days that cannot be stored here)
                self.host.plain_live('the day was not here for %d live records in a row (%s)'
                                     % (misses[PATCH_BEHIND], self.key))
        else:
            log.info('requester: %s: the summaries patch of record %s did not give the '
                     "primary's day here; asking for that day", self.key, ts)
            if misses[PATCH_DIFFERS] >= MAX_PATCH_MISSES:
                self.host.plain_live('%d summaries patches in a row did not fit (%s)'
                                     % (misses[PATCH_DIFFERS], self.key))
        self.start_catchup()

    # --- live records ------------------------------------------------------------------------

    def _on_live(self, item):
        live = item.body
        record = live.record
        log.debug('requester: %s: live record %s (prev %s, have %s%s)', self.key,
                  record['dateTime'], live.prev, self.position,
                  ', catching up' if self.catching_up else '')
        self.primary_newest = max(self.primary_newest or 0, record['dateTime'])
        # a live record of a protocol-1 responder has no prev: until a catch-up completed,
        # it cannot be known to follow what is stored
        hole = live.prev > self.position if live.prev is not None else self.unanswered
        if self.catching_up or hole:
            if not self.catching_up:
                log.info('requester: %s: hole before live record %s (have %s, primary had %s);'
                         ' catching up', self.key, record['dateTime'], self.position,
                         live.prev)
                self.start_catchup()
            # Acknowledge now: held messages would fill the broker's in-flight window and
            # stall the catch-up. A record lost here is still in the primary's database.
            self._ack_message(item)
            self.catchup.held_live.append(item)
            return
        try:
            self._store_one(record, live.days, live.patch)
        finally:
            self._ack_message(item)
        if self.sink.patch_miss is not None:
            self._patch_missed(record['dateTime'])
        elif live.compact and live.days_error:
            self.start_catchup()       # (the requester logged why): the day comes with it
        self.flush_ack()

    def _ack_message(self, item):
        if not item.acked:
            item.acked = True
            self.link.ack(item.message)

    # --- protocol 1 --------------------------------------------------------------------------

    def _store_legacy(self):
        """Store the protocol-1 records received so far: in bulk (the newest held back for
        the engine) or, with catchup = engine, one by one."""
        round_ = self.legacy_round
        records = round_.take()
        if not records:
            return
        if not self.catching_up:
            # a protocol-1 answer that came after the catch-up gave up waiting for it: ask
            # again (and store the records of that answer); older ones are here already
            if any(r['dateTime'] > self.position for r in records):
                log.info('requester: %s: protocol-1 records after the catch-up ended; '
                         'catching up again since %s', self.key, self.position)
                self.start_catchup()
            else:
                log.debug('requester: %s: %d old protocol-1 records ignored', self.key,
                          len(records))
                return
        self.responder_protocol = 1
        self.state = State.RECEIVING
        self.last_progress = time.monotonic()
        if self.sink.engine and self.options.catchup == 'engine':
            for record in records:
                self._legacy_store_one(record)
            return
        if self.sink.engine:
            records, round_.newest = records[:-1], records[-1]
        for record in records:         # older ones, rare: stored one by one, in place
            if record['dateTime'] <= self.position:
                self._legacy_store_one(record)
        newer = [r for r in records if r['dateTime'] > self.position]
        if newer:
            before = self.position
            for record in newer:
                round_.note_gap(before, record['dateTime'], record)
                before = record['dateTime']
            round_.new += self.sink.store_bulk(newer)[0]
            self.acks.due()

    def _legacy_store_one(self, record):
        """Store one protocol-1 record (or hand it to the engine); note gaps around it."""
        ts = record['dateTime']
        before = self.position
        if not self._store_one(record):
            return
        self.legacy_round.new += 1
        if ts > before:
            self.legacy_round.note_gap(before, ts, record)
        else:                          # a hole filled: its neighbours at the round's end
            self.legacy_round.filled.append((ts, record))

    def _release_legacy_newest(self):
        """The newest protocol-1 record, held back from the bulk store, goes through the
        engine (or is stored) now."""
        if self.legacy_round.newest is not None:
            newest, self.legacy_round.newest = self.legacy_round.newest, None
            self._legacy_store_one(newest)

    def _legacy_round_done(self, quiet):
        """A protocol-1 answer has no end: it is over when nothing came for a while. It is
        complete only if it brought nothing new; otherwise (or if records were dropped
        here) ask again from the newest record stored. A gap between new records longer
        than their interval is checked by asking again from before it, once the answers
        bring nothing new (a gap that is a real outage of the primary then brings nothing
        either)."""
        round_ = self.legacy_round
        partial = round_.was_partial()
        self._release_legacy_newest()
        for ts, record in round_.filled:       # now that every hole of the round is filled
            previous, following = self.store.neighbours(ts)
            round_.note_gap(previous, ts, record)
            if following:
                round_.note_gap(ts, following, record)
        if round_.filled:
            filled = [ts for ts, _ in round_.filled]
            self.store.rebuild_days(min(filled), max(filled))
        round_.filled = []
        if partial or round_.new:
            log.info('requester: %s: protocol-1 answer of %d new records%s; asking again '
                     'since %s', self.key, round_.new,
                     ' (some dropped here)' if partial else '', self.position)
            self.start_catchup()
            return
        if round_.suspect is not None:
            since, round_.suspect = round_.suspect, None
            log.info('requester: %s: gap in the protocol-1 records after %s; asking again '
                     'from there for records lost on the way', self.key, since)
            self.start_catchup(since)
            return
        log.info('requester: %s: no new protocol-1 records for %.0f s; caught up at %s',
                 self.key, quiet, self.position)
        self._catchup_done()
