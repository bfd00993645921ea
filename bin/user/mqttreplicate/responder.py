"""The responder: publishes new archive records live and answers catch-up requests.

Threads (SPEC §6.1): the engine thread publishes live records (MQTTResponder); the paho loop
thread receives requests and hands them over a bounded queue to catch-up workers, which
read the database through connections of their own, in short, fully fetched pages; the
status ticker publishes the status and keeps the MQTT loop running; protocol-1 answers go
out from a thread of their own (LegacyServer). Each of these is a worker.Worker: none ends
silently. Nothing here ever raises into the engine.

Messages are built and read by protocol's message classes only: a request is read once
into an Envelope, decoded by messages.decode_request(), and answered with Page,
DigestReply or ErrorReply; live records are LiveRecord, protocol-1 answers LegacyRecord.

Full catch-up pages are shared by the secondaries that ask for the same range at once
(pagecache.PageCache: one read and one encoding per page, whatever the number of
secondaries); live records are published once, on the archive topic, for all of them.
"""

import logging
import os
import queue
import threading
import time

import weedb
import weewx
import weewx.engine
from weewx.engine import StdService

from . import VERSION
from . import config as cfg
from . import database
from . import messages, protocol, summaries
from .daypatch import Patcher
from .pagecache import EncodedPage, PageCache
from .summaries import PRIMARY_DAYS
from .faults import RateLimitedLog, is_termination
from . import homeassistant
from . import statusfile
from .status import LastError, LinkState, Pacer, StatusPublisher, without
from .transport import Transport
from .worker import Worker

log = logging.getLogger(__name__)

# daily summaries a page brings from before its since: enough for the records of two
# interrupted pages at an archive interval of an hour (a day's summaries of ~50 types are a
# few KB); older ones are left to the verification's comparison of the whole history
MAX_DAYS_BACK = 420 * 86400

STATUS_INTERVAL = 1.0        # look at the status this often
STATUS_SETTLE = 2.0          # routine status changes published once quiet this long
REFRESH_INTERVAL = 60.0      # re-read each binding's newest record this often
FINGERPRINT_DAYS = 7         # the whole past days a binding's fingerprint covers
FINGERPRINT_INTERVAL = 60.0   # and how often it is computed (a digest of those days)
QUEUE_SIZE = 100             # pending requests; more are dropped (the requester asks again)
MAX_NODES = 100              # secondaries remembered in the status (the oldest go first)
LEGACY_RETRY_MAX = 60.0      # longest pause before a failed protocol-1 read is tried again


# what opening a binding's database raises before the engine created it
NOT_CREATED = (weedb.NoDatabaseError, weedb.NoTableError)


class Request:
    """A request being served: the decoded request (messages.RecordsRequest or
    messages.DigestRequest), the binding it names, how many records a page may have here,
    where the answer goes, and when it arrived (an answer nobody waits for is not sent)."""

    def __init__(self, message, binding, limit, envelope):
        self.message = message
        self.binding = binding
        self.limit = limit
        self.response_topic = envelope.response_topic
        self.correlation = envelope.correlation
        self.expiry = envelope.expiry          # seconds the requester waits for an answer
        self.received = time.monotonic()

    def expired(self):
        return self.expiry is not None and time.monotonic() - self.received > self.expiry


class Sources:
    """The database connections of one thread, one per binding key, opened when first
    used: a WeeWX connection is used only in the thread that opened it."""

    def __init__(self, manager_dicts):
        self.manager_dicts = manager_dicts
        self.open = {}

    def __getitem__(self, key):
        if key not in self.open:
            self.open[key] = database.SourceDatabase(self.manager_dicts[key])
        return self.open[key]

    def close(self):
        """Close them all (after a failure: one may be broken); the next use opens anew."""
        for source in self.open.values():
            source.close()
        self.open.clear()


class Responder:
    """Serves one or more instances from this station's databases."""

    def __init__(self, options: cfg.ResponderOptions, config_dict, status_path=None):
        self.options = options
        self.conn = options.connection
        self.bindings = {b.key: b for b in options.bindings}
        self.manager_dicts = {b.key: database.manager_dict(config_dict, b.name, b.where())
                              for b in options.bindings}
        self.requests = queue.Queue(QUEUE_SIZE)
        self.faults = RateLimitedLog(log)
        self.counters = {'requests': 0, 'pages': 0, 'pages_shared': 0, 'records_sent': 0,
                         'live': 0, 'rejected': 0, 'acks': 0, 'digests': 0}
        self.cache = PageCache()       # encoded full pages, shared by the workers
        self.lock = threading.Lock()
        self.newest = {}           # binding key -> newest dateTime here
        self.fingerprints = {}     # binding key -> [since, until, hex] of its recent past
        self.fingerprinted = -FINGERPRINT_INTERVAL   # monotonic time they were computed
        self.published = {}        # binding key -> newest dateTime published live
        self.nodes = {}            # node -> binding key -> {'last', 'count', 'time'}
        self.interval = statusfile.archive_interval(config_dict, 300)
        self.pacer = Pacer.of(self.interval, STATUS_SETTLE, options.status_heartbeat)
        self.link_state = LinkState()
        self.last_error = LastError(('responder', 'pagecache'))
        self.secondaries = statusfile.Secondaries()     # their own statuses
        self.status_file = statusfile.StatusFile(
            status_path or statusfile.status_path(config_dict),
            statusfile.station_info(config_dict, self.interval), 'responder')
        self.stopping = threading.Event()
        request_topics = [protocol.request_topic(self.conn.request_topic, i)
                          for i in options.instances]
        self.statuses = StatusPublisher(None, 'responder', self.conn.clientid, {
            i: protocol.status_topic(self.conn.status_topic, i) for i in options.instances})
        # the secondaries' statuses: their state and verifications, for the status file
        self.peer_prefixes = [protocol.status_topic(self.conn.status_topic, i) + '/'
                              for i in options.instances]
        # (QoS 0: the broker keeps none of them for us while we are away)
        peer_topics = [(prefix + '+', 0) for prefix in self.peer_prefixes]
        self.birth_topic = homeassistant.birth_topic(options.homeassistant, self.conn)
        if self.birth_topic:
            peer_topics.append((self.birth_topic, 0))
        self.transport = Transport(self.conn, request_topics + peer_topics, self._on_message,
                                   on_connected=self._on_connected,
                                   will=self.statuses.will, name='responder',
                                   on_rejected=self._on_unsigned)
        self.statuses.transport = self.transport
        self.discovery = homeassistant.Discovery(
            options.homeassistant, 'responder', config_dict, self.transport,
            os.path.dirname(self.status_file.path), self.interval, options.status_heartbeat)
        self.connected_at = None       # when the current connection began (in the status)
        self.workers = [self._catchup_worker(n) for n in range(options.workers)]
        self.last_refresh = time.monotonic()
        self.ticker = Worker('responder-status', self._tick, self.faults,
                             'responder: status not published', stopping=self.stopping)
        self.legacy = LegacyServer(self)
        self.patcher = Patcher()       # the day sent with each binding's last live record
        self.protocol1_seen = False    # a protocol-1 requester asked: live records as JSON
        self.live_compact = None       # how the last live record went (compact_live)

    def _catchup_worker(self, n):
        sources = Sources(self.manager_dicts)
        return Worker.serving('responder-worker-%d' % n, self.requests,
                              lambda item: self._handle(item, sources), self.faults,
                              'responder: request failed', stopping=self.stopping,
                              on_failure=lambda e: sources.close(), cleanup=sources.close)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        log.info('responder %s: %s', VERSION, self.conn.describe())
        log.info('responder: serving %s', ', '.join(sorted(self.bindings)))
        self.last_error.attach()
        for worker in self.workers:
            worker.start()
        self.ticker.start()
        self.legacy.start()
        self.transport.start()

    def stop(self):
        self.stopping.set()
        for worker in self.workers:
            worker.stop(10)
        self.ticker.stop(5)
        self.legacy.stop()
        self.transport.stop(self.statuses.finals())
        self.cache.clear()
        self.link_state.update(False, stopped=True)
        self.status_file.write(self.file_section())
        self.last_error.detach()
        log.info('responder: stopped (%s)', self._counter_text())

    def is_alive(self):
        """True while every thread of the responder runs: the MQTT loop, the workers, the
        status ticker and the protocol-1 server."""
        workers = self.workers + [self.ticker, self.legacy.worker]
        return self.transport.is_alive() and all(w.is_alive() for w in workers)

    def _counter_text(self):
        return ', '.join('%s %d' % kv for kv in sorted(self.counters.items()))

    def _count(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def _answer(self, request, wire):
        self.transport.publish(request.response_topic, wire.payload, wire.properties,
                               correlation=request.correlation)

    # --- live records (engine thread or watcher) ---------------------------------------------

    def publish_live(self, binding, record, prev, days=None):
        """Publish one record of a binding as a live record, with its day's daily summaries
        (a summaries.DayRows, or None). Never raises."""
        try:
            if not self.transport.connected.is_set():
                log.debug('responder: not connected; live record %s of %s left to catch-up',
                          record.get('dateTime'), binding.key)
                return
            topic = protocol.archive_topic(self.conn.archive_topic, binding.instance)
            # (the patcher sees every day, so that a patch can follow any record)
            patch = self.patcher.patch(binding.key, record, prev, days)
            why = self.plain_why()
            if (why is None) != self.live_compact:
                self.live_compact = why is None
                log.info('responder: live records go %s from now on%s',
                         'compact' if why is None else 'plain, with whole days,',
                         '' if why is None else ': ' + why)
            if why is None:
                live = messages.LiveRecord(binding.key, record, prev, days, patch=patch,
                                           compact=True)
            else:
                live = messages.LiveRecord(binding.key, record, prev, days)
            wire = live.encode()
            # one message for every secondary: they all subscribe to the archive topic
            self.transport.publish(topic, wire.payload, wire.properties)
            if record['dateTime'] < (self.newest.get(binding.key) or 0):
                # a record older than the newest (a backfill through the engine): the
                # shared pages that cover it are read again
                self.cache.invalidate(binding.key, record['dateTime'])
            with self.lock:
                self.counters['live'] += 1
                self.newest[binding.key] = max(self.newest.get(binding.key) or 0,
                                               record['dateTime'])
                self.published[binding.key] = max(self.published.get(binding.key) or 0,
                                                  record['dateTime'])
        except Exception as e:
            if is_termination(e):
                raise
            self.faults(logging.ERROR, 'live', 'responder: cannot publish record %s of %s: %s',
                        record.get('dateTime'), binding.key, e)

    def compact_live(self):
        """Can live records go compact (docs/protocol.md: compressed with the dictionary,
        the day's summaries as a patch)? See plain_why()."""
        return self.plain_why() is None

    def plain_why(self):
        """Why live records go plain (the record as a JSON object, the whole day in the
        `days` property), or None: live_format = json; a protocol-1 requester asked since we
        started (it reads live records as plain JSON objects); or a secondary we know that
        is not offline does not say in its status that it takes compact ones (an older
        one, or one whose patches did not fit)."""
        if self.options.live_format == 'json':
            return 'live_format = json'
        if self.protocol1_seen:
            return 'a protocol-1 requester asked'
        seen = self.secondaries.snapshot()
        with self.lock:
            nodes = sorted(self.nodes)
        for node in nodes:
            if node not in seen:
                return '%s acknowledges but publishes no status here' % node
        for clientid, entry in sorted(seen.items()):
            if entry['state'] != 'offline' and entry.get('live') != protocol.LIVE_COMPACT:
                return '%s takes only plain ones' % clientid
        return None

    # --- requests (loop thread) --------------------------------------------------------------

    def _on_connected(self, session_present):
        self.connected_at = int(time.time())
        self._queue(('connected',))

    def _queue(self, item):
        try:
            self.requests.put_nowait(item)
            return True
        except queue.Full:
            self.faults(logging.WARNING, 'busy',
                        'responder: %d requests waiting; dropping one (the requester will ask '
                        'again)', QUEUE_SIZE)
            return False

    def _reject(self, kind, text, *args):
        self._count('rejected')
        self.faults(logging.WARNING, 'reject-' + kind, 'responder: rejected a request: ' + text,
                    *args)

    def _on_unsigned(self, message):
        """A message without a valid signature: the transport logged and dropped it."""
        self._count('rejected')

    def _on_message(self, message):
        """A message on a request topic: an ack, or a request for the workers (protocol 2)
        or for the LegacyServer (protocol 1). What is refused here is ours to refuse: an
        unknown binding, a response topic outside our prefix; messages.decode_request()
        refuses what does not follow the protocol."""
        if message.topic == self.birth_topic:
            self.discovery.on_birth(message.payload)
            return
        clientid = self._peer(message.topic)
        if clientid is not None:
            self._on_peer_status(clientid, message)
            return
        envelope = messages.Envelope.of(message)
        key = envelope.binding
        binding = self.bindings.get(key)
        instance = protocol.instance_of(envelope.topic, self.conn.request_topic)
        if key is None and envelope.op == protocol.OP_ACK:
            self._on_compact_ack(envelope, instance)
            return
        if binding is None or binding.instance != instance:
            log.debug('responder: request for unknown binding %r on %s ignored', key,
                      envelope.topic)
            if envelope.version == 2 and envelope.op != protocol.OP_ACK:
                self._reply_error(envelope, 'unknown binding %r' % key)
            return
        is_ack = envelope.op == protocol.OP_ACK
        prefix = self.conn.response_topic + '/'
        topic = envelope.response_topic
        if not is_ack and (not topic or not topic.startswith(prefix)
                           or any(c in topic for c in '+#') or topic == prefix):
            self._reject('topic', 'response topic %r is outside %s (binding %s)', topic,
                         prefix, key)
            return
        try:
            request = messages.decode_request(envelope)
        except protocol.ProtocolError as e:
            if is_ack:
                self._reject('ack', 'bad ack: %s', e)
            else:
                self._reject('malformed', '%s (binding %s)', e, key)
            return
        if isinstance(request, messages.Ack):
            self._on_ack(request)
            return
        self._count('requests')
        records = isinstance(request, messages.RecordsRequest)
        limit = self.options.page_size          # a page never has more records than that
        if records and request.limit:
            limit = min(request.limit, limit)
        if records and request.version == 1:
            if not self.protocol1_seen:
                log.info('responder: a protocol-1 requester asked (%s): live records go as '
                         'plain JSON objects from now on', envelope.response_topic)
                self.protocol1_seen = True
            self.legacy.submit(Request(request, binding, limit, envelope))
        else:
            self._queue(Request(request, binding, limit, envelope))

    def _peer(self, topic):
        """The client id of a secondary's status topic ({status_topic}/{instance}/{clientid}),
        else None."""
        for prefix in self.peer_prefixes:
            if topic.startswith(prefix) and '/' not in topic[len(prefix):]:
                return topic[len(prefix):]
        return None

    def _on_peer_status(self, clientid, message):
        """A secondary's own retained status."""
        try:
            status = protocol.decode_payload(message.payload, None)
        except protocol.ProtocolError:
            return
        self.secondaries.update(clientid, status, retained=bool(message.retain))

    def _reply_error(self, envelope, text):
        topic = envelope.response_topic
        if not topic or not topic.startswith(self.conn.response_topic + '/'):
            return
        wire = messages.ErrorReply(envelope.binding or '', text).encode()
        self.transport.publish(topic, wire.payload, wire.properties,
                               correlation=envelope.correlation)

    def _on_compact_ack(self, envelope, instance):
        """An ack without data_binding: its payload names the bindings, of `instance`."""
        try:
            ack = messages.decode_request(envelope)
        except protocol.ProtocolError as e:
            self._reject('ack', 'bad ack: %s', e)
            return
        self._on_ack(ack, instance)

    def _on_ack(self, ack, instance=None):
        now = int(time.time())
        entries = {key: {'last': last, 'count': count, 'time': now}
                   for key, (last, count) in ack.entries.items() if key in self.bindings
                   and (instance is None or self.bindings[key].instance == instance)}
        if not entries:        # no binding of ours (on that instance): not a node of ours
            log.debug('responder: ack of %s names no binding served here', ack.node)
            return
        with self.lock:
            self.nodes.setdefault(ack.node, {}).update(entries)
            if len(self.nodes) > MAX_NODES:
                oldest = min(self.nodes, key=lambda n: max(
                    (e['time'] for e in self.nodes[n].values()), default=0))
                del self.nodes[oldest]
            self.counters['acks'] += 1

    # --- workers -----------------------------------------------------------------------------

    def _handle(self, item, sources):
        """One item of the request queue, in a catch-up worker."""
        if isinstance(item, tuple):
            due = time.monotonic() - self.fingerprinted >= FINGERPRINT_INTERVAL
            if due or item[0] == 'fingerprint':
                self.fingerprinted = time.monotonic()
            self._refresh(sources, publish_newest=item[0] == 'connected',
                          fingerprint=due or item[0] == 'fingerprint')
        else:
            self._serve(item, sources)

    def _refresh(self, sources, publish_newest=False, fingerprint=False):
        """Re-read each binding's newest record. After a (re)connection also publish it if
        it was never published live: a record committed just before the primary stopped, or
        while the broker was away, then reaches live secondaries without waiting for the
        next one. With fingerprint, compute each binding's fingerprint of its last whole
        days (summaries.fingerprint), which its status carries: a secondary that sees it
        change for the same days verifies at once (an import, a correction)."""
        for binding in self.options.ordered_bindings():
            key = binding.key
            try:
                source = sources[key]
                newest = source.newest()
                if fingerprint:
                    since, until = summaries.fingerprint_range(int(time.time()),
                                                               FINGERPRINT_DAYS)
                    mark = summaries.fingerprint(source.digest(
                        since, until, 86400, list(source.columns), summaries=True))
                with self.lock:
                    self.newest[key] = newest
                    if fingerprint:
                        self.fingerprints[key] = [since, until, mark]
                    unpublished = newest and newest > (self.published.get(key) or 0)
                if publish_newest and unpublished:
                    record = source.record_near(newest, 0)
                    if record is not None:
                        self.publish_live(binding, record, source.previous(newest),
                                          source.live_days(newest))
            except NOT_CREATED as e:
                # a new station whose engine has not created the database yet (a relay's
                # first start): nothing to serve until it has
                self.faults(logging.INFO, 'refresh-' + key, 'responder: binding %s has no '
                            'database yet (%s); it is served once it has', key, e)
            except Exception as e:
                self.faults(logging.ERROR, 'refresh-' + key,
                            'responder: cannot read binding %s: %s', key, e)

    def _serve(self, request, sources):
        asked = request.message
        if request.expired():
            log.debug('responder: request of %s since %s expired before it was served',
                      asked.node, asked.since)
            return
        try:
            source = sources[request.binding.key]
        except NOT_CREATED as e:
            # no database yet, so no records: an empty, final page (or digest) says so
            log.info('responder: binding %s has no database yet (%s); answered with nothing',
                     request.binding.key, e)
            self._answer(request, messages.DigestReply(request.binding.key, []).encode(False)
                         if isinstance(asked, messages.DigestRequest) else
                         messages.Page(request.binding.key, [], False, asked.since,
                                       None).encode(1, 1, False)[0])
            return
        if isinstance(asked, messages.DigestRequest):
            self._serve_digest(request, source)
            return
        key = request.binding.key
        if asked.replace:
            # a repair must see the database as it is now
            page, shared = self._read_page(request, source), False
        else:
            page, shared = self.cache.fetch(self._page_key(request),
                                            lambda: self._shareable(request, source))
        # the newest record is read for every answer, so it is never stale
        wires = with_newest(page.wires, source.newest())
        for wire in wires:
            self._answer(request, wire)
        with self.lock:
            self.counters['pages'] += 1
            self.counters['pages_shared'] += shared
            self.counters['records_sent'] += page.count
            if page.count:
                self.newest[key] = max(self.newest.get(key) or 0, page.last)
        log.debug('responder: page of %d records (%d messages%s) for %s since %s to %s',
                  page.count, len(wires), ', shared' if shared else '', asked.node,
                  asked.since, request.response_topic)

    def _page_key(self, request):
        """What makes two requests' pages the same: the range, the limit after the
        page_size cap, the day the daily summaries start from, the layout and the
        encoding."""
        asked = request.message
        days = database.day_start(asked.days) if asked.days else asked.days
        return (request.binding.key, asked.since, asked.until, request.limit, days, asked.layout,
                self.options.batch_size, self.conn.max_message_bytes, self.conn.compress)

    def _read_page(self, request, source):
        """Read and encode one page (its `newest` is set when it is sent)."""
        asked = request.message
        records = source.read_columns(asked.since, asked.until, request.limit)
        last = records.last if records else asked.since
        more = len(records) >= request.limit
        days = self._read_days(asked, source, records.first if records else 0, last, more)
        if asked.layout is None:
            records = records.records()         # one object per record, as protocol 2 began
        wires = messages.Page(request.binding.key, records, more, last, None, days,
                              pack=asked.layout == protocol.LAYOUT_PACKED).encode(
            self.options.batch_size, self.conn.max_message_bytes, self.conn.compress,
            self._oversize)
        return EncodedPage(wires, len(records), more, last,
                           min(asked.since, days.first) if days is not None else asked.since)

    @staticmethod
    def _read_days(asked, source, oldest, last, more):
        """The daily summaries a page brings if asked for: whole days, from the day of
        asked.days (or of the page's first record) to the day of its last record (or of
        until), which is left out if more records follow: the next page brings it.

        Records and summaries are read one after the other: a record stored in between
        (the primary's engine goes on) is in the summaries but not in the page. So the
        days from that of the first record the page should have had but has not are left
        out: that record's live message brings its day."""
        if asked.days is None:
            return None
        # days=0: from the first record (a secondary whose first page was cut)
        start = asked.days or (oldest if not asked.since else source.first_after(0, last))
        if not start:
            return None
        # at most MAX_DAYS_BACK before the page: older days left without summaries here
        # are built there (a bounded read, whatever is asked)
        first = max(database.day_start(start),
                    database.day_start(asked.since + 1 - MAX_DAYS_BACK))
        stop = database.day_start(last) if more else database.day_stop(
            max(last, start, asked.until or 0))
        days = source.read_days(first, stop)
        if days is None:
            return None
        wanted = stop if asked.until is None else min(stop, asked.until)
        later = source.first_after(last, wanted)
        if later is not None:
            cut = database.day_start(later)
            days = days.only(first, cut) if cut > first else None
        return days

    def _shareable(self, request, source):
        """(page, keep) for the cache: only a full page is kept. Its records are the first
        `limit` after since, which new records do not change; a short page (the tail,
        more=0) changes with the next record, so each request reads it anew."""
        page = self._read_page(request, source)
        return page, page.more

    def _serve_digest(self, request, source):
        """One message: the digest of the range, read in short pages (SPEC 5.5)."""
        asked = request.message
        buckets = source.digest(asked.since, asked.until, asked.bucket, list(asked.columns),
                                asked.summaries, asked.null_inf)
        reply = messages.DigestReply(request.binding.key, buckets, source.unit_system())
        self._answer(request, reply.encode(self.conn.compress))
        self._count('digests')
        log.debug('responder: digest of %d buckets for %s (%s to %s)', len(buckets),
                  asked.node, asked.since, asked.until)

    def _oversize(self, record, size):
        self.faults(logging.ERROR, 'oversize', 'responder: record %s is %d bytes, more than '
                    'max_message_bytes (%d); not sent', record.get('dateTime'), size,
                    self.conn.max_message_bytes)

    # --- status ------------------------------------------------------------------------------

    def status(self):
        with self.lock:
            bindings = {k: dict({'newest': self.newest.get(k)}, **(
                {'fingerprint': self.fingerprints[k]} if k in self.fingerprints else {}))
                for k in sorted(self.bindings)}
            nodes = {}
            for node, entry in self.nodes.items():
                nodes[node] = {}
                for key, ack in entry.items():
                    newest = self.newest.get(key)
                    lag = (newest - ack['last']) if newest and ack['last'] is not None \
                        else None
                    nodes[node][key] = dict(ack, lag=max(lag, 0) if lag is not None else None)
            counters = dict(self.counters)
        return dict(self.statuses.online(), connected=self.connected_at, bindings=bindings,
                    nodes=nodes, counters=counters, acks=protocol.ACKS_COMPACT)

    def _tick(self):
        """One turn of the status ticker: after STATUS_INTERVAL, keep the MQTT loop running,
        queue the periodic refresh, and publish the status if it changed. A failure is
        logged by the worker and the status published again at the next turn: status
        publishing must never end silently."""
        if self.stopping.wait(STATUS_INTERVAL):
            return
        self.transport.revive()
        self.cache.expire()            # expired pages do not wait for the next request
        if time.monotonic() - self.last_refresh > REFRESH_INTERVAL:
            self.last_refresh = time.monotonic()
            self._queue(('refresh',))
        connected = self.transport.connected.is_set()
        self.link_state.update(connected)
        section = self.file_section()
        error = self.last_error.last
        # (a new fingerprint is an edit of the past the secondaries verify at once)
        with self.lock:
            fingerprints = tuple((k, tuple(v)) for k, v in sorted(self.fingerprints.items()))
        key = (connected, self.connected_at, error and error['time'],
               tuple((c, s['state']) for c, s in section['secondaries'].items()), fingerprints)
        if connected:
            status = self.status()
            content = without(status, 'time')
            steady = self.steady(status)
            if self.pacer.due(content, key, steady):
                self.pacer.published(content, key, steady)
                self._publish_status(status)
            self.discovery.remove()
            self.discovery.update(homeassistant.responder_components(
                self.discovery, self, section['secondaries']), self.connected_at)
        self.status_file.offer(section, key)

    def steady(self, status):
        """True if every secondary acknowledged our newest records, but those whose own
        status says they are offline: routine changes then wait for the heartbeat (the
        live record tells the secondaries our newest). A secondary that is behind (or has
        stopped acknowledging while it is online) is not steady: its lag is news."""
        offline = {clientid for clientid, seen in self.secondaries.snapshot().items()
                   if seen['state'] == 'offline'}
        return all(ack['lag'] == 0 for node, acks in status['nodes'].items()
                   if node not in offline for ack in acks.values())

    def file_section(self):
        """Our key of the station's status file (statusfile.responder_section)."""
        return statusfile.responder_section(self, self.link_state, self.last_error,
                                            self.interval)

    def _publish_status(self, status=None):
        status = status or self.status()
        self.statuses.publish({instance: dict(status, instance=instance, bindings={
            k: v for k, v in status['bindings'].items() if k.startswith(instance + '/')})
            for instance in self.options.instances})


def with_newest(wires, newest):
    """A page's wires with `newest` (the primary's newest record, now) on the last one; the
    others are shared as they are."""
    last = wires[-1]
    props = [(name, newest or 0) if name == 'newest' else (name, value)
             for name, value in last.properties]
    return wires[:-1] + [messages.Wire(last.payload, props)]


class LegacyServer:
    """Answers protocol-1 requests on a worker of its own, so they never hold up protocol-2
    pages. A protocol-1 requester cannot ask for less than everything, so the answer goes
    out throttle_count records at a time, throttle_sleep seconds apart (the broker's queue
    for a slow requester must not overflow). A newer request for the same response topic
    replaces the answer in progress."""

    def __init__(self, responder):
        self.responder = responder
        self.lock = threading.Lock()
        self.pending = {}              # response topic -> newest request
        self.active = {}               # response topic -> [request, since, failures, not before]
        self.wake = threading.Event()
        self.sources = Sources(responder.manager_dicts)
        self.worker = Worker('responder-protocol1', self._turn, responder.faults,
                             'responder: protocol-1 answers failed',
                             stopping=responder.stopping, wake=self.wake.set,
                             on_failure=lambda e: self.sources.close(),
                             cleanup=self.sources.close)

    def start(self):
        self.worker.start()

    def stop(self):
        self.worker.stop(10)

    def submit(self, request):
        with self.lock:
            if request.response_topic not in self.pending and len(self.pending) >= MAX_NODES:
                self.responder.faults(logging.WARNING, 'legacy-busy', 'responder: too many '
                                      'protocol-1 requests; one dropped')
                return
            self.pending[request.response_topic] = request
        self.wake.set()

    def _turn(self):
        """Take the new requests, then send the next part of every answer that is due."""
        with self.lock:
            new, self.pending = self.pending, {}
        for topic, request in new.items():
            self.active[topic] = [request, request.message.since, 0, 0.0]
        if not self.active:
            self.wake.wait(1.0)
            self.wake.clear()
            return
        now = time.monotonic()
        for topic in list(self.active):
            if self.active[topic][3] <= now:
                self._answer_part(topic)
        if self.active:
            self.responder.stopping.wait(self.responder.options.throttle_sleep)

    def _answer_part(self, topic):
        """Send the next throttle_count records of one answer. A failed read is tried again
        on a new connection, after a pause that doubles up to LEGACY_RETRY_MAX: a
        protocol-1 requester never asks again, so the answer is kept until it is done, a
        newer request replaces it, or the responder stops."""
        responder = self.responder
        request, since, failures, _ = self.active[topic]
        key = request.binding.key
        try:
            records = self.sources[key].read_page(since, None,
                                                  responder.options.throttle_count)
            for record in records:
                wire = messages.LegacyRecord(key, record).encode()
                responder.transport.publish(topic, wire.payload, wire.properties)
                since = record['dateTime']
        except Exception as e:
            if is_termination(e):
                raise
            failures += 1
            pause = min(responder.options.throttle_sleep * 2 ** failures, LEGACY_RETRY_MAX)
            responder.faults(logging.ERROR, 'legacy', 'responder: protocol-1 answer to %s '
                             'failed (try %d; again in %.0f s): %s: %s', topic, failures,
                             pause, type(e).__name__, e)
            # a connection that failed (a MySQL server gone away) is not used again: the
            # next try opens a new one
            self.sources.close()
            self.active[topic] = [request, since, failures, time.monotonic() + pause]
            return
        if len(records) < responder.options.throttle_count:
            del self.active[topic]
            log.debug('responder: protocol-1 answer since %s to %s done',
                      request.message.since, topic)
        else:
            self.active[topic] = [request, since, 0, 0.0]


class MQTTResponder(StdService):
    """The WeeWX service: publishes each new archive record and answers requests."""

    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        self.responder = None
        if isinstance(engine, weewx.engine.DummyEngine):
            # `weectl report run` loads every service: a second responder with the
            # primary's client id would throw the running one off the broker
            log.info('responder: not started outside weewxd (%s)', type(engine).__name__)
            return
        try:
            if not cfg.has_role(config_dict, 'Responder'):
                log.info('responder: no [%s][[Responder]] section; not started',
                         cfg.stanza_name(config_dict))
                return
            options = cfg.parse_responder(config_dict)
            if not options.enable:
                log.info('responder: not enabled')
                return
            self.responder = Responder(options, config_dict)
            self.options = options
            self.responder.start()
        except (cfg.ConfigError, LookupError) as e:
            # A configuration error is the user's to fix, but it must not stop the primary.
            log.error('responder: not started: %s', e)
            self.responder = None
            return
        except Exception as e:
            if is_termination(e):
                raise
            log.error('responder: not started: %s: %s', type(e).__name__, e)
            self.responder = None
            return
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.new_archive_record)

    def new_archive_record(self, event):
        """Publish the new record of every binding: other bindings first, main last."""
        try:
            self._publish(event.record['dateTime'], event.record,
                          main_days=getattr(event, PRIMARY_DAYS, None))
        except Exception as e:    # never harm the primary
            if is_termination(e):
                raise
            log.error('responder: new_archive_record failed: %s', e)

    def _publish(self, ts, main_record=None, newest_only=False, main_days=None):
        """main_days: on a relay, the summaries of the record's day its own primary sent
        with it (they replace what StdArchive just made of that day, once the engine is
        done with the record): those are sent on, not what the database holds now."""
        for binding in self.options.ordered_bindings():
            try:
                manager = self.engine.db_binder.get_manager(binding.name)
                if newest_only:
                    ts = manager.lastGoodStamp()
                    if not ts or ts <= (self.responder.published.get(binding.key) or 0):
                        continue
                if binding.is_main:
                    record = manager.getRecord(ts) or main_record
                else:
                    record = manager.getRecord(ts, max_delta=self.options.delta)
                if record is None:
                    log.debug('responder: no record of %s near %s', binding.key, ts)
                    continue
                record = protocol.compact(record)
                at = record['dateTime']    # (another binding's record may be near ts only)
                prev = database.previous_timestamp(manager, at)
                days = main_days if binding.is_main and main_days is not None \
                    and main_days.through == at else self._days_of(manager, at)
                self.responder.publish_live(binding, record, prev, days)
            except Exception as e:
                if is_termination(e):
                    raise
                self.responder.faults(logging.ERROR, 'live-' + binding.key,
                                      'responder: cannot publish %s record %s: %s: %s',
                                      binding.key, ts, type(e).__name__, e)

    def _days_of(self, manager, ts):
        """The daily summaries of the day of the record at ts, as StdArchive left them, or
        None (the record goes without them: the secondaries update that day themselves)."""
        try:
            return database.live_days(manager, ts)
        except Exception as e:
            if is_termination(e):
                raise
            self.responder.faults(logging.WARNING, 'days', 'responder: daily summaries of %s '
                                  'not read: %s: %s', ts, type(e).__name__, e)
            return None

    def shutDown(self):
        """Publish what was committed but not published yet (a stop right after StdArchive
        stored a record), then stop."""
        if self.responder is None:
            return
        try:
            self._publish(None, newest_only=True)
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('responder: newest records not published at shutdown: %s', e)
        try:
            self.responder.stop()
        except Exception as e:
            if is_termination(e):
                raise
            log.error('responder: error while stopping: %s', e)
