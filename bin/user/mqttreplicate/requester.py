"""The requester: asks for what this station is missing, stores it, and keeps up live.

One Requester holds the MQTT client and one Replica per binding. The paho loop thread only
decodes messages and puts them in the inbox of the thread that owns the binding's database:
the engine thread for the `main` binding under weewxd (see driver.py), a writer thread for
every other binding (and for all of them when run from the command line).
"""

import collections
import logging
import queue
import threading
import time


from . import VERSION
from . import config as cfg
from . import database
from . import protocol
from .transport import RateLimitedLog, Transport, is_termination
from .verify import AutoVerifier

log = logging.getLogger(__name__)

ACK_INTERVAL = 1.0       # acknowledge stored records at most this often
OFFLINE = -1             # the responder's `connected` while its status says offline
PIPELINE = 2             # pages outstanding at most (one being stored, one in flight)
MAX_HELD_LIVE = 2000     # live records kept aside during a catch-up (the newest ones)
INBOX_SIZE = 1000        # items waiting for the thread that owns a database (SPEC 6.1)
POST_TIMEOUT = 10.0      # the loop thread waits this long for room in an inbox, then drops
MAX_LEGACY = 5000        # protocol-1 records received and not stored yet


class Item:
    """Something for a replica's owning thread to do."""
    __slots__ = ('kind', 'records', 'props', 'correlation', 'message', 'replica', 'acked')

    def __init__(self, kind, records=None, props=None, correlation=None, message=None):
        self.kind = kind               # 'batch', 'live', 'legacy', 'connected', 'verify'
        self.records = records
        self.props = props or {}
        self.correlation = correlation
        self.message = message
        self.replica = None
        self.acked = False


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


class Replica:
    """One replicated binding on this station. All methods but accept() run on the thread
    that owns the binding's database."""

    def __init__(self, requester, binding, inbox, open_store, deliver=None):
        """open_store() -> TargetDatabase, called on the owning thread.
        deliver(record): hands a record to the engine instead of storing it (main binding
        under weewxd); None stores directly."""
        self.requester = requester
        self.binding = binding
        self.key = binding.key
        self.inbox = inbox
        self.open_store = open_store
        self.deliver = deliver
        self.store = None
        self.position = 0
        self.flow = PageFlow(self._send_request)
        self.catching_up = False
        self.caught_up = threading.Event()     # set after the first complete catch-up
        self.pages = {}                        # correlation -> {'next': seq, 'held': {}}
        self.held_live = collections.deque(maxlen=MAX_HELD_LIVE)
        self.last_progress = time.monotonic()
        self.legacy = False                    # the responder speaks protocol 1
        self.legacy_records = collections.deque()   # protocol-1 records not stored yet
        self.legacy_lock = threading.Lock()
        self.legacy_partial = False            # records of this round were dropped here
        self.legacy_new = 0                    # records this protocol-1 round stored
        self.legacy_newest = None              # held back to go through the engine last
        self.legacy_suspect = None             # before the earliest gap among new records
        self.legacy_filled = []                # holes filled this round: (dateTime, record)
        self.legacy_seen = 0.0                 # when a protocol-1 message last arrived
        self.catchup_wanted = False            # the loop thread asks for a catch-up
        self.answered = False                  # the responder answered this catch-up
        self.unanswered = False                # the last catch-up got no answer at all
        self.refused = None                    # the responder's error, if it refused us
        self.stored = 0
        self.ack_due = False
        self.last_ack = 0.0
        self.primary_newest = None
        self.acknowledged = None               # our newest record, as the responder knows it
        self.verifier = AutoVerifier(self)

    # --- loop thread -------------------------------------------------------------------------

    def _send_request(self, since, until):
        return self.requester.send_request(self.binding, since, until)

    def post(self, item):
        """Hand an item to the owning thread. Waits a while for room (the inbox is bounded);
        an item that finds none is dropped: a page that misses a message is asked for
        again, a live record's hole is found by the next one's prev. While stopping it
        does not wait (nobody empties the inbox any more), and leaves a dropped message
        unacknowledged, for the session to deliver again."""
        item.replica = self
        stopping = self.requester.stopping.is_set()
        try:
            self.inbox.put(item, timeout=None if stopping else POST_TIMEOUT,
                           block=not stopping)
            return True
        except queue.Full:
            self.requester.count('dropped')
            if stopping:
                return False
            self.faults(logging.WARNING, 'inbox-full', 'requester: %s: %d items wait for the '
                        'database; one dropped (it will be asked for again)', self.key,
                        self.inbox.maxsize)
            if item.message is not None:
                self.requester.transport.ack(item.message)
            return False

    def want_catchup(self):
        """Ask the owning thread for a catch-up (after a connection, or when the responder
        is back). A flag, not an inbox item: it cannot be dropped."""
        self.catchup_wanted = True
        item = Item('connected')
        item.replica = self
        try:
            self.inbox.put_nowait(item)        # wakes the owning thread; else its idle()
        except queue.Full:
            pass

    def post_legacy(self, records):
        """Keep protocol-1 records for the owning thread (loop thread; never waits, so the
        broker never has to queue what an old responder floods). Once records had to be
        dropped, the rest of the round is dropped too: what is kept is always the oldest
        part, and the next round asks again from the newest record stored."""
        self.legacy_seen = time.monotonic()
        with self.legacy_lock:
            if self.legacy_partial or len(self.legacy_records) + len(records) > MAX_LEGACY:
                self.legacy_partial = True
                return
            wake = not self.legacy_records
            self.legacy_records.extend(records)
        if wake:
            item = Item('legacy')
            item.replica = self
            try:
                self.inbox.put_nowait(item)
            except queue.Full:
                pass          # the owning thread finds the records at its next idle()

    # --- owning thread -----------------------------------------------------------------------

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

    def handle(self, item):
        """Process one inbox item."""
        self.open()
        self._take_catchup_request()
        if item.kind == 'batch':
            self._on_batch(item)
        elif item.kind == 'live':
            self._on_live(item)
        elif item.kind == 'legacy':
            self._on_legacy(item)
        elif item.kind == 'verify':
            self.verifier.on_answer(item)

    def _take_catchup_request(self):
        if self.catchup_wanted:
            self.catchup_wanted = False
            self.start_catchup()

    def idle(self):
        """Called when the inbox was quiet for a while: timeouts and acks."""
        self.open()
        self._take_catchup_request()
        options = self.requester.options
        if self.catching_up:
            patience = options.startup_max_tries * options.startup_wait_before_retry
            self._store_legacy()
            # a protocol-1 answer is over when nothing arrived for a while, stored or not
            quiet = time.monotonic() - max(self.last_progress, self.legacy_seen)
            if self.legacy and quiet >= patience:
                self._legacy_round_done(quiet)
            elif not self.answered and quiet >= patience \
                    and self.requester.transport.connected.is_set():
                # No responder (or a protocol-1 one with nothing to send). Carry on live;
                # the next live record's `prev` or the next connection starts a catch-up.
                self.faults(logging.WARNING, 'unanswered',
                            'requester: %s: no answer from the responder for %.0f s; carrying '
                            'on with live records', self.key, quiet)
                self.unanswered = True
                self._catchup_done()
            elif quiet >= options.page_timeout:
                log.warning('requester: %s: no answer for %.0f s; asking again since %s',
                            self.key, quiet, self.position)
                self.start_catchup()
        else:
            self._store_legacy()
            self.verifier.tick()
        self.flush_ack()

    @property
    def faults(self):
        return self.requester.faults

    def start_catchup(self, since=None):
        """Ask for everything newer than the newest record stored (or than since)."""
        self.catching_up = True
        self.unanswered = False
        self.verifier.cancel()
        self.refused = None
        self.answered = False
        self.pages = {}
        self._store_legacy()
        with self.legacy_lock:
            self.legacy_partial = False
        self.legacy_new = 0
        self.last_progress = time.monotonic()
        if not self.requester.transport.connected.is_set():
            return        # asked again on the next connection
        since = self.position if since is None else since
        log.debug('requester: %s: catching up since %s', self.key, since)
        self.flow.start(since)

    def _legacy_round_done(self, quiet):
        """A protocol-1 answer has no end: it is over when nothing came for a while. It is
        complete only if it brought nothing new; otherwise (or if records were dropped
        here) ask again from the newest record stored. A broker whose queue for us
        overflowed drops records in the middle of an answer, and nobody says so: a gap
        between new records longer than their interval is checked by asking again from
        before it, once the answers bring nothing new (a gap that is a real outage of the
        primary then brings nothing either)."""
        with self.legacy_lock:
            partial = self.legacy_partial
        self._release_legacy_newest()
        for ts, record in self.legacy_filled:  # now that every hole of the round is filled
            previous, following = self.store.neighbours(ts)
            self._legacy_gap(previous, ts, record)
            if following:
                self._legacy_gap(ts, following, record)
        if self.legacy_filled:
            filled = [ts for ts, _ in self.legacy_filled]
            self.store.rebuild_days(min(filled), max(filled))
        self.legacy_filled = []
        if partial or self.legacy_new:
            log.info('requester: %s: protocol-1 answer of %d new records%s; asking again '
                     'since %s', self.key, self.legacy_new,
                     ' (some dropped here)' if partial else '', self.position)
            self.start_catchup()
            return
        if self.legacy_suspect is not None:
            since, self.legacy_suspect = self.legacy_suspect, None
            log.info('requester: %s: gap in the protocol-1 records after %s; asking again '
                     'from there for records lost on the way', self.key, since)
            self.start_catchup(since)
            return
        log.info('requester: %s: no new protocol-1 records for %.0f s; caught up at %s',
                 self.key, quiet, self.position)
        self._catchup_done()

    def _legacy_gap(self, before, ts, record):
        """Note a gap between `before` (a stored record's dateTime, or 0) and the new record
        at ts longer than the record's interval."""
        if before and ts - before > record.get('interval', 0) * 60:
            self.legacy_suspect = before if self.legacy_suspect is None \
                else min(self.legacy_suspect, before)

    def _release_legacy_newest(self):
        """The newest protocol-1 record, held back from the bulk store, goes through the
        engine (or is stored) now."""
        if self.legacy_newest is not None:
            newest, self.legacy_newest = self.legacy_newest, None
            self._legacy_deliver(newest)

    def _legacy_deliver(self, record):
        """Store one protocol-1 record (or hand it to the engine); note gaps around it."""
        ts = record['dateTime']
        before = self.position
        if not self._deliver_one(record):
            return
        self.legacy_new += 1
        if ts > before:
            self._legacy_gap(before, ts, record)
        else:                                  # a hole filled: its neighbours at round end
            self.legacy_filled.append((ts, record))

    def _catchup_done(self):
        self.catching_up = False
        self.legacy_suspect = None
        self.legacy_filled = []
        self.flow.stop()
        self.pages = {}
        self._release_legacy_newest()
        self.store.finish_bulk()
        # In dateTime order: deliveries reordered by reconnections close their own holes.
        held = sorted(self.held_live, key=lambda i: i.records[0]['dateTime'])
        self.held_live.clear()
        for item in held:
            self._on_live(item)
        if not self.catching_up and not self.unanswered and not self.refused:
            self.caught_up.set()
            self.verifier.schedule()
        self.ack_due = True        # tell the responder where we are, even if nothing came
        self.flush_ack(force=True)

    def _on_batch(self, item):
        correlation = item.correlation
        if not self.flow.is_current(correlation):
            log.debug('requester: %s: discarded a message of an old request', self.key)
            return
        page = self.pages.setdefault(correlation, {'next': 0, 'held': {}})
        seq = item.props['seq']
        if seq < page['next'] or seq in page['held']:
            log.debug('requester: %s: duplicate message %d of a page', self.key, seq)
            return
        page['held'][seq] = item
        self._drain_pages()

    def _drain_pages(self):
        """Store what has arrived strictly in the order the pages were asked for, each page
        in seq order: nothing is stored past a message that is still missing (a page that
        never completes times out and the catch-up starts again from what is stored)."""
        while self.catching_up:
            correlation = self.flow.first()
            page = self.pages.get(correlation) if correlation is not None else None
            if page is None or page['next'] not in page['held']:
                return
            current = page['held'].pop(page['next'])
            page['next'] += 1
            self._store_page_part(current)
            if not current.props.get('end'):
                continue
            if current.props.get('newest'):
                self.primary_newest = max(self.primary_newest or 0, current.props['newest'])
            del self.pages[correlation]
            self.flow.consumed(correlation)
            if current.props.get('error'):
                self.refused = current.props['error']
                self.faults(logging.ERROR, 'refused-' + self.key,
                            "requester: %s: the responder refused the catch-up: %s; check "
                            "that the primary's [[Responder]] has the instance [[[%s]]] with "
                            "the binding [[[[%s]]]] (names as in this station's "
                            "[[Requester]]) and that enable = true", self.key, self.refused,
                            self.binding.instance, self.binding.name)
                self._catchup_done()
            elif not current.props.get('more'):
                log.debug('requester: %s: caught up at %s', self.key, self.position)
                self._catchup_done()

    def _store_page_part(self, item):
        self.last_progress = time.monotonic()
        self.answered = True
        self.unanswered = False
        self.legacy = False            # a protocol-2 page: the responder was upgraded
        records = item.records
        if not records:
            return
        final = item.props.get('end') and not item.props.get('more')
        if self.deliver is not None and self.requester.options.catchup == 'engine':
            for record in records:
                self._deliver_one(record)
            return
        if self.deliver is not None and final:
            # The newest record goes through the engine, so its services and reports see it.
            records, newest = records[:-1], records[-1]
        else:
            newest = None
        if records:
            prepared = [self.store.prepare(r, self.key) for r in records]
            self.stored += self.store.store_bulk(prepared)
            self.position = max(self.position, prepared[-1]['dateTime'])
            self.requester.progress(len(records))
        if newest is not None:
            self.store.finish_bulk()
            self._deliver_one(newest)
        self.ack_due = True

    def _deliver_one(self, record):
        """Store one record (or hand it to the engine). True if it was new."""
        record = self.store.prepare(record, self.key)
        ts = record['dateTime']
        if ts <= self.position and self.store.existing(ts, ts):
            log.debug('requester: %s: record %s is already here', self.key, ts)
            return False
        if self.deliver is not None and ts > self.position:
            self.store.finish_bulk()
            if self.deliver(record) is False:
                return False
        else:
            # The engine sees records strictly in dateTime order: an older one (a
            # protocol-1 redelivery, a primary whose clock stepped back) is stored here.
            if not self.store.store_one(record):
                return False
        self.stored += 1
        self.position = max(self.position, ts)
        self.requester.progress(1)
        self.ack_due = True
        return True

    def _on_live(self, item):
        record = item.records[0]
        prev = item.props.get('prev')
        log.debug('requester: %s: live record %s (prev %s, have %s%s)', self.key,
                  record['dateTime'], prev, self.position,
                  ', catching up' if self.catching_up else '')
        self.primary_newest = max(self.primary_newest or 0, record['dateTime'])
        # a live record of a protocol-1 responder has no prev: until a catch-up completed,
        # it cannot be known to follow what is stored
        hole = prev > self.position if prev is not None else self.unanswered
        if self.catching_up or hole:
            if not self.catching_up:
                log.info('requester: %s: hole before live record %s (have %s, primary had %s);'
                         ' catching up', self.key, record['dateTime'], self.position, prev)
                self.start_catchup()
            # Acknowledge now: held messages would fill the broker's in-flight window and
            # stall the catch-up. A record lost here is still in the primary's database.
            if not item.acked:
                item.acked = True
                self.requester.transport.ack(item.message)
            self.held_live.append(item)     # when full, the oldest go: the catch-up has them
            return
        try:
            self._deliver_one(record)
        finally:
            if not item.acked:
                self.requester.transport.ack(item.message)
        self.flush_ack()

    def _on_legacy(self, item):
        """Protocol-1 records arrived (post_legacy): store them."""
        self._store_legacy()

    def _store_legacy(self):
        """Store the protocol-1 records received so far: in bulk (the newest held back for
        the engine) or, with catchup = engine, one by one."""
        with self.legacy_lock:
            records = list(self.legacy_records)
            self.legacy_records.clear()
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
        self.legacy = True
        self.answered = True
        self.unanswered = False
        self.last_progress = time.monotonic()
        if self.legacy_newest is not None:
            records.append(self.legacy_newest)
            self.legacy_newest = None
        unique = {r['dateTime']: r for r in records}
        records = [unique[ts] for ts in sorted(unique)]
        if self.deliver is not None and self.requester.options.catchup == 'engine':
            for record in records:
                self._legacy_deliver(record)
            return
        if self.deliver is not None:
            records, self.legacy_newest = records[:-1], records[-1]
        newer = [r for r in records if r['dateTime'] > self.position]
        older = [r for r in records if r['dateTime'] <= self.position]
        for record in older:               # rare: stored one by one, in place
            self._legacy_deliver(record)
        if newer:
            prepared = [self.store.prepare(r, self.key) for r in newer]
            before = self.position
            for record in prepared:
                self._legacy_gap(before, record['dateTime'], record)
                before = record['dateTime']
            count = self.store.store_bulk(prepared)
            self.stored += count
            self.legacy_new += count
            self.position = max(self.position, prepared[-1]['dateTime'])
            self.requester.progress(count)
            self.ack_due = True

    def flush_ack(self, force=False):
        now = time.monotonic()
        if not self.ack_due or (not force and now - self.last_ack < ACK_INTERVAL):
            return
        self.ack_due = False
        self.last_ack = now
        self.requester.send_ack(self)


class Requester:
    """The MQTT side of a secondary: one client, one Replica per binding."""

    def __init__(self, options: cfg.RequesterOptions, config_dict):
        self.options = options
        self.conn = options.connection
        self.config_dict = config_dict
        self.replicas = {}
        self.faults = RateLimitedLog(log)
        self.status_lock = threading.Lock()
        self.stopping = threading.Event()
        self.counter_lock = threading.Lock()
        self.rejected = 0            # messages (or parts of them) refused
        self.dropped = 0             # items dropped for want of room in an inbox
        self.received = 0
        self.progress_count = 0
        self.responder_connected = {}    # instance -> `connected` of the responder's status
        self.response_topic = protocol.response_topic(self.conn.response_topic,
                                                      self.conn.clientid)
        # the responders' retained status: what the primary has, and when it comes back
        self.responder_status = {protocol.status_topic(self.conn.status_topic, i): i
                                 for i in options.instances}
        subscriptions = [self.response_topic] + [
            protocol.archive_topic(self.conn.archive_topic, i) for i in options.instances] + \
            sorted(self.responder_status)
        self.status_topics = [protocol.status_topic(self.conn.status_topic, i,
                                                    self.conn.clientid)
                              for i in options.instances]
        self.offline = protocol.encode_json({'state': 'offline', 'role': 'requester',
                                             'clientid': self.conn.clientid})
        self.transport = Transport(self.conn, subscriptions, self._on_message,
                                   on_connected=self._on_connected,
                                   will=(self.status_topics[0], self.offline),
                                   manual_ack=True, name='requester',
                                   on_rejected=self._on_unsigned)

    def add_replica(self, replica):
        self.replicas[replica.key] = replica

    def start(self):
        log.info('requester %s: %s', VERSION, self.conn.describe())
        log.info('requester: replicating %s (catchup = %s)',
                 ', '.join(r.key for r in self.ordered()), self.options.catchup)
        self.transport.start()

    def stop(self):
        self.stopping.set()            # the loop thread no longer waits for a full inbox
        self.transport.stop([(t, self.offline) for t in self.status_topics])

    def ordered(self):
        return sorted(self.replicas.values(), key=lambda r: (r.binding.is_main, r.key))

    def is_alive(self):
        return self.transport.is_alive()

    # --- sending (any thread) ----------------------------------------------------------------

    def send_request(self, binding, since, until=None, replace=False, correlation=None):
        """Ask for a page of records newer than since; the correlation of the answer."""
        props = [('op', protocol.OP_RECORDS), ('limit', self.options.page_size)]
        if until is not None:
            props.append(('until', until))
        if replace:
            props.append(('replace', 1))
        return self._ask(binding, str(int(since)).encode('ascii'), props, correlation)

    def send_digest(self, binding, since, until, bucket, columns, correlation=None):
        """Ask for the digest of since < dateTime <= until (SPEC 5.5)."""
        return self._ask(binding, protocol.encode_json(
            {'since': since, 'until': until, 'bucket': bucket, 'columns': columns}),
            [('op', protocol.OP_DIGEST)], correlation)

    def _ask(self, binding, payload, props, correlation=None):
        correlation = correlation or protocol.new_correlation()
        self.transport.publish(protocol.request_topic(self.conn.request_topic, binding.instance),
                               payload, [('data_binding', binding.key),
                                         ('protocol', protocol.PROTOCOL),
                                         ('node', self.conn.clientid)] + props,
                               correlation=correlation, response_topic=self.response_topic,
                               expiry=max(int(self.options.page_timeout), 1))
        return correlation

    def send_ack(self, replica):
        try:
            payload = protocol.encode_json({replica.key: {'last': replica.position,
                                                          'count': replica.stored}})
            self.transport.publish(
                protocol.request_topic(self.conn.request_topic, replica.binding.instance),
                payload, [('data_binding', replica.key), ('protocol', protocol.PROTOCOL),
                          ('node', self.conn.clientid), ('op', protocol.OP_ACK)])
            self.publish_status()
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('requester: ack not sent: %s', e)

    def publish_status(self):
        # Called from the loop thread and from the threads that own the bindings: the lock
        # makes sure an older picture is never published after a newer one.
        with self.status_lock:
            self._publish_status()

    def _publish_status(self):
        for instance, topic in zip(self.options.instances, self.status_topics):
            bindings = {}
            for replica in self.ordered():
                if replica.binding.instance != instance:
                    continue
                lag = None
                if replica.primary_newest:
                    lag = max(replica.primary_newest - replica.position, 0)
                bindings[replica.key] = {'newest': replica.position,
                                         'primary_newest': replica.primary_newest,
                                         'lag': lag, 'stored': replica.stored,
                                         'acknowledged': replica.acknowledged,
                                         'catching_up': replica.catching_up,
                                         'verified': replica.verifier.verified,
                                         'repaired': replica.verifier.repaired}
            status = {'state': 'online', 'role': 'requester', 'version': VERSION,
                      'clientid': self.conn.clientid, 'instance': instance,
                      'time': int(time.time()), 'bindings': bindings,
                      'rejected': self.rejected}
            self.transport.publish(topic, protocol.encode_json(status), qos=1, retain=True)

    def count(self, name, n=1):
        """Add n to the counter `name` (rejected, dropped); any thread."""
        with self.counter_lock:
            setattr(self, name, getattr(self, name) + n)

    def progress(self, count):
        with self.counter_lock:
            self.progress_count += count
            total = self.progress_count
        every = self.options.log_msg_count
        if every and total % every < count:
            log.info('requester: %d records stored', total)

    # --- receiving (loop thread) -------------------------------------------------------------

    def _on_connected(self, session_present):
        for replica in self.ordered():
            replica.want_catchup()

    def _reject(self, kind, text, *args):
        self.count('rejected')
        self.faults(logging.WARNING, kind, 'requester: rejected a message: ' + text, *args)

    def _on_unsigned(self, message):
        """A message without a valid signature: the transport logged and dropped it."""
        self.count('rejected')

    def _on_responder_status(self, message, instance):
        """The responder's status: learn the primary's newest records; a responder that
        (re)appears gets the catch-ups that found nobody to answer."""
        self.transport.ack(message)
        try:
            status = protocol.decode_payload(message.payload, None)
            if isinstance(status, dict) and status.get('state') == 'offline':
                self.responder_connected[instance] = OFFLINE
            if not isinstance(status, dict) or status.get('state') != 'online':
                return
            bindings = status.get('bindings') or {}
            nodes = status.get('nodes') or {}
            mine = (nodes.get(self.conn.clientid) or {}) if isinstance(nodes, dict) else {}
            if not isinstance(bindings, dict) or not isinstance(mine, dict):
                raise protocol.ProtocolError('bindings or nodes is not an object')
        except protocol.ProtocolError as e:
            self._reject('status', 'responder status on %s: %s', message.topic, e)
            return
        # A responder that connected after our request was sent may never have seen it (a
        # broker restart without persistence): ask again at once rather than wait. Only the
        # responder's own clock is compared with itself: it reconnected if its `connected`
        # differs from the one of the last status we saw, or if that status said offline.
        # The first status we see tells nothing (retained, or queued in our session).
        connected = status.get('connected')
        if not protocol.plain_int(connected):
            connected = None
        seen = self.responder_connected.get(instance)
        reconnected = connected is not None and seen is not None and connected != seen
        if connected is not None:
            self.responder_connected[instance] = connected
        changed = False
        for replica in self.replicas.values():
            if replica.binding.instance != instance:
                continue
            newest = _field(bindings, replica.key, 'newest')
            if newest is not None:
                replica.primary_newest = max(replica.primary_newest or 0, newest)
            acknowledged = _field(mine, replica.key, 'last')
            if acknowledged != replica.acknowledged:
                replica.acknowledged = acknowledged
                changed = True
            missed = reconnected and replica.catching_up and not replica.answered
            if replica.unanswered or missed:
                log.info('requester: %s: the responder is back; asking again', replica.key)
                replica.want_catchup()
        if changed:
            self.publish_status()     # what the primary knows of us is part of our status

    def _on_verify_answer(self, message, replica, props, correlation):
        """A message of the answer to a verification (a digest or a page of records)."""
        self.transport.ack(message)
        try:
            payload = protocol.decode_payload(message.payload, props.get('encoding'))
            numbers = {name: protocol.int_property(props, name, None)
                       for name in ('seq', 'end', 'more', 'last', 'units')}
        except protocol.ProtocolError as e:
            self._reject('malformed', '%s (answer to a verification of %s)', e, replica.key)
            return
        numbers['error'] = props.get('error')
        replica.post(Item('verify', payload, numbers, correlation))

    def _on_message(self, message):
        instance = self.responder_status.get(message.topic)
        if instance is not None:
            self._on_responder_status(message, instance)
            return
        self.received += 1
        props = protocol.user_properties(message.properties)
        key = props.get('data_binding')
        replica = self.replicas.get(key)
        if replica is None:
            log.debug('requester: message for unknown binding %r on %s ignored', key,
                      message.topic)
            self.transport.ack(message)
            return
        is_live = message.topic != self.response_topic
        correlation = getattr(message.properties, 'CorrelationData', None)
        if not is_live and replica.verifier.expects(correlation):
            self._on_verify_answer(message, replica, props, correlation)
            return
        if not is_live and replica.verifier.expected(correlation):
            log.debug('requester: %s: late answer to a verification ignored', key)
            self.transport.ack(message)
            return
        if is_live and protocol.instance_of(message.topic, self.conn.archive_topic) \
                != replica.binding.instance:
            self._reject('topic', 'binding %s on topic %s', key, message.topic)
            self.transport.ack(message)
            return
        try:
            records, errors, sent = protocol.decode_batch(message.payload,
                                                          props.get('encoding'))
            numbers = {}
            for name in ('seq', 'count', 'end', 'more', 'last', 'prev', 'newest'):
                numbers[name] = protocol.int_property(props, name, None)
        except protocol.ProtocolError as e:
            self._reject('malformed', '%s (binding %s, topic %s)', e, key, message.topic)
            self.transport.ack(message)
            return
        numbers['error'] = props.get('error')
        if errors:
            self.count('rejected')      # messages with something rejected
            self.faults(logging.WARNING, 'record',
                        'requester: rejected %d of %d records (binding %s, topic %s): %s',
                        len(errors), sent, key, message.topic, errors[0])
        if is_live:
            if len(records) != 1 or sent != 1:
                if not errors:
                    self._reject('malformed', 'live message with %d records (binding %s)',
                                 sent, key)
                self.transport.ack(message)
                return
            # acknowledged once stored
            replica.post(Item('live', records, numbers, message=message))
            return
        self.transport.ack(message)
        if props.get('protocol') != protocol.PROTOCOL:
            # Acknowledged at once: an old responder floods its whole answer, and what the
            # broker cannot queue for us it drops. A record lost here is asked for again.
            replica.post_legacy(records)
            return
        if numbers['seq'] is None or (numbers['count'] is not None
                                      and numbers['count'] != sent):
            self._reject('malformed', 'page message with seq %s, count %s and %d records '
                         '(binding %s)', numbers['seq'], numbers['count'], sent, key)
            return
        if not replica.flow.is_current(correlation):
            log.debug('requester: %s: discarded a message of an old request', key)
            return
        if numbers['end'] and not replica.flow.on_end(correlation, numbers['more'],
                                                      numbers['last']):
            self._reject('malformed', 'a page ends with more=1 and last=%s, which does not '
                         'advance (binding %s)', numbers['last'], key)
            return
        replica.post(Item('batch', records, numbers, correlation))


def _field(entries, key, name):
    """entries[key][name] if it is a plain int, else None (the status is not trusted)."""
    entry = entries.get(key)
    value = entry.get(name) if isinstance(entry, dict) else None
    return value if protocol.plain_int(value) else None


class Writer:
    """A thread that owns the databases of the replicas it serves."""

    def __init__(self, requester, name='requester-writer'):
        self.requester = requester
        self.inbox = queue.Queue(INBOX_SIZE)
        self.replicas = []
        self.stopping = threading.Event()
        self.failed = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, binding, config_dict, preferred_units=None):
        mgr_dict = database.manager_dict(config_dict, binding.secondary_data_binding)

        def open_store():
            return database.TargetDatabase(mgr_dict, binding.initialize, preferred_units)

        replica = Replica(self.requester, binding, self.inbox, open_store)
        self.replicas.append(replica)
        self.requester.add_replica(replica)
        return replica

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        try:
            self.inbox.put_nowait(None)    # wakes the thread at once; else within a second
        except queue.Full:
            pass
        self.thread.join(30)

    def is_alive(self):
        return self.thread.is_alive()

    def _run(self):
        try:
            for replica in self.replicas:
                replica.open()
            last_idle = time.monotonic()
            while not self.stopping.is_set():
                try:
                    item = self.inbox.get(timeout=1.0)
                except queue.Empty:
                    item = None
                if item is not None:
                    self._handle(item)
                # timeouts and acks of every binding, even while another one is busy
                if item is None or time.monotonic() - last_idle >= 1.0:
                    last_idle = time.monotonic()
                    for replica in self.replicas:
                        replica.idle()
        except Exception as e:
            self.failed = e
            log.error('requester: writer thread failed: %s: %s', type(e).__name__, e)
            log.debug('traceback', exc_info=True)
        finally:
            for replica in self.replicas:
                try:
                    replica.close()
                except Exception as e:
                    log.error('requester: closing %s: %s', replica.key, e)

    def _handle(self, item):
        item.replica.handle(item)
        item.replica.flush_ack()
