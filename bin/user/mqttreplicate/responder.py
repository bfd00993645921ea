"""The responder: publishes new archive records live and answers catch-up requests.

Threads (SPEC §6.1): the engine thread publishes live records (MQTTResponder); the paho loop
thread receives requests and hands them over a bounded queue to catch-up worker threads,
which read the database through connections of their own, in short, fully fetched pages.
Nothing here ever raises into the engine.
"""

import logging
import queue
import threading
import time

import weewx
from weewx.engine import StdService

from . import VERSION
from . import config as cfg
from . import database
from . import protocol
from .status import StatusPublisher
from .transport import RateLimitedLog, Transport, is_termination

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0        # publish status at most this often
REFRESH_INTERVAL = 60.0      # re-read each binding's newest record this often
QUEUE_SIZE = 100             # pending requests; more are dropped (the requester asks again)
MAX_NODES = 100              # secondaries remembered in the status (the oldest go first)
LEGACY_RETRY_MAX = 60.0      # longest pause before a failed protocol-1 read is tried again


class Request:
    """One decoded request."""

    def __init__(self, binding, op, since, until, limit, response_topic, correlation, node,
                 protocol_version, replace=False, expiry=None, digest=None):
        self.binding = binding
        self.op = op
        self.since = since
        self.until = until
        self.limit = limit
        self.response_topic = response_topic
        self.correlation = correlation
        self.node = node
        self.protocol_version = protocol_version
        self.replace = replace
        self.expiry = expiry                    # seconds the requester waits for an answer
        self.digest = digest                    # op=digest: (bucket, columns)
        self.received = time.monotonic()

    def expired(self):
        return self.expiry is not None and time.monotonic() - self.received > self.expiry


class Responder:
    """Serves one or more instances from this station's databases."""

    def __init__(self, options: cfg.ResponderOptions, config_dict):
        self.options = options
        self.conn = options.connection
        self.bindings = {b.key: b for b in options.bindings}
        self.manager_dicts = {b.key: database.manager_dict(config_dict, b.name)
                              for b in options.bindings}
        self.requests = queue.Queue(QUEUE_SIZE)
        self.workers = []
        self.faults = RateLimitedLog(log)
        self.counters = {'requests': 0, 'pages': 0, 'records_sent': 0, 'live': 0,
                         'rejected': 0, 'acks': 0, 'digests': 0}
        self.lock = threading.Lock()
        self.newest = {}           # binding key -> newest dateTime here
        self.published = {}        # binding key -> newest dateTime published live
        self.nodes = {}            # node -> binding key -> {'last', 'count', 'time'}
        self.status_dirty = threading.Event()
        self.stopping = threading.Event()
        request_topics = [protocol.request_topic(self.conn.request_topic, i)
                          for i in options.instances]
        self.statuses = StatusPublisher(None, 'responder', self.conn.clientid, {
            i: protocol.status_topic(self.conn.status_topic, i) for i in options.instances})
        self.transport = Transport(self.conn, request_topics, self._on_message,
                                   on_connected=self._on_connected,
                                   will=self.statuses.will, name='responder',
                                   on_rejected=self._on_unsigned)
        self.statuses.transport = self.transport
        self.ticker = None
        self.connected_at = None       # when the current connection began (in the status)
        self.legacy = LegacyServer(self)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        log.info('responder %s: %s', VERSION, self.conn.describe())
        log.info('responder: serving %s', ', '.join(sorted(self.bindings)))
        for n in range(self.options.workers):
            worker = threading.Thread(target=self._work, name='responder-worker-%d' % n,
                                      daemon=True)
            worker.start()
            self.workers.append(worker)
        self.ticker = threading.Thread(target=self._tick, name='responder-status', daemon=True)
        self.ticker.start()
        self.legacy.start()
        self.transport.start()

    def stop(self):
        self.stopping.set()
        for _ in self.workers:
            try:
                self.requests.put_nowait(None)
            except queue.Full:
                pass
        for worker in self.workers:
            worker.join(10)
        if self.ticker is not None:
            self.ticker.join(5)
        self.legacy.stop()
        self.transport.stop(self.statuses.finals())
        log.info('responder: stopped (%s)', self._counter_text())

    def is_alive(self):
        """True while every thread of the responder runs: the MQTT loop, the workers, the
        status ticker and the protocol-1 server."""
        threads = self.workers + [self.ticker, self.legacy.thread]
        return self.transport.is_alive() and all(t is not None and t.is_alive()
                                                 for t in threads)

    def _counter_text(self):
        return ', '.join('%s %d' % kv for kv in sorted(self.counters.items()))

    # --- live records (engine thread or watcher) ---------------------------------------------

    def publish_live(self, binding, record, prev):
        """Publish one record of a binding as a live record. Never raises."""
        try:
            if not self.transport.connected.is_set():
                log.debug('responder: not connected; live record %s of %s left to catch-up',
                          record.get('dateTime'), binding.key)
                return
            topic = protocol.archive_topic(self.conn.archive_topic, binding.instance)
            payload = protocol.encode_json(record)
            self.transport.publish(topic, payload, [('data_binding', binding.key),
                                                    ('protocol', protocol.PROTOCOL),
                                                    ('prev', prev or 0)])
            with self.lock:
                self.counters['live'] += 1
                self.newest[binding.key] = max(self.newest.get(binding.key) or 0,
                                               record['dateTime'])
                self.published[binding.key] = max(self.published.get(binding.key) or 0,
                                                  record['dateTime'])
            self.status_dirty.set()
        except Exception as e:
            if is_termination(e):
                raise
            self.faults(logging.ERROR, 'live', 'responder: cannot publish record %s of %s: %s',
                        record.get('dateTime'), binding.key, e)

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
        with self.lock:
            self.counters['rejected'] += 1
        self.faults(logging.WARNING, 'reject-' + kind, 'responder: rejected a request: ' + text,
                    *args)

    def _on_unsigned(self, message):
        """A message without a valid signature: the transport logged and dropped it."""
        with self.lock:
            self.counters['rejected'] += 1
        self.status_dirty.set()

    def _on_message(self, message):
        props = protocol.user_properties(message.properties)
        key = props.get('data_binding')
        binding = self.bindings.get(key)
        instance = protocol.instance_of(message.topic, self.conn.request_topic)
        if binding is None or binding.instance != instance:
            log.debug('responder: request for unknown binding %r on %s ignored', key,
                      message.topic)
            if props.get('protocol') == protocol.PROTOCOL and props.get('op') != protocol.OP_ACK:
                self._reply_error(message, props, 'unknown binding %r' % key)
            return
        op = props.get('op', protocol.OP_RECORDS)
        if op == protocol.OP_ACK:
            self._on_ack(props, message.payload)
            return
        response_topic = getattr(message.properties, 'ResponseTopic', None)
        prefix = self.conn.response_topic + '/'
        if not response_topic or not response_topic.startswith(prefix) \
                or any(c in response_topic for c in '+#') or response_topic == prefix:
            self._reject('topic', 'response topic %r is outside %s (binding %s)',
                         response_topic, prefix, key)
            return
        version = {None: 1, protocol.PROTOCOL: 2}.get(props.get('protocol'))
        try:
            if version is None:
                raise protocol.ProtocolError('protocol %r is not supported'
                                             % props.get('protocol'))
            digest = None
            limit = protocol.int_property(props, 'limit', self.options.page_size, 1)
            if op == protocol.OP_DIGEST and version == 2:
                since, until, bucket, columns = protocol.parse_digest_request(message.payload)
                digest = (bucket, columns)
            elif op == protocol.OP_RECORDS:
                since = protocol.parse_since(message.payload)
                until = protocol.int_property(props, 'until', None)
            else:
                raise protocol.ProtocolError('operation %r is not supported' % op)
        except protocol.ProtocolError as e:
            self._reject('malformed', '%s (binding %s)', e, key)
            return
        correlation = getattr(message.properties, 'CorrelationData', None)
        with self.lock:
            self.counters['requests'] += 1
        request = Request(binding, op, since, until, min(limit, self.options.page_size),
                          response_topic, correlation, props.get('node'), version,
                          props.get('replace') == '1',
                          getattr(message.properties, 'MessageExpiryInterval', None), digest)
        if version == 1:
            self.legacy.submit(request)
        else:
            self._queue(request)

    def _reply_error(self, message, props, text):
        response_topic = getattr(message.properties, 'ResponseTopic', None)
        if not response_topic or not response_topic.startswith(self.conn.response_topic + '/'):
            return
        self.transport.publish(response_topic, b'[]', [
            ('data_binding', props.get('data_binding', '')), ('protocol', protocol.PROTOCOL),
            ('seq', 0), ('count', 0), ('end', 1), ('more', 0), ('error', text)],
            correlation=getattr(message.properties, 'CorrelationData', None))

    def _on_ack(self, props, payload):
        node = props.get('node')
        try:
            acks = protocol.decode_payload(payload, None)
            if not node or not isinstance(acks, dict):
                raise protocol.ProtocolError('ack without node or object payload')
            if len(node) > 200 or any(c in node for c in '/+#'):
                raise protocol.ProtocolError('node %.40r is not a client id' % node)
            entries = {}
            for key, value in acks.items():
                if key not in self.bindings:
                    continue
                count = value.get('count') if isinstance(value, dict) else None
                if not isinstance(value, dict) or not protocol.plain_int(value.get('last')) \
                        or not (count is None or protocol.plain_int(count)):
                    raise protocol.ProtocolError('ack of %s is not {"last": int, "count": int}'
                                                 % key)
                entries[key] = {'last': value['last'], 'count': value.get('count'),
                                'time': int(time.time())}
            with self.lock:
                self.nodes.setdefault(node, {}).update(entries)
                if len(self.nodes) > MAX_NODES:
                    oldest = min(self.nodes, key=lambda n: max(
                        (e['time'] for e in self.nodes[n].values()), default=0))
                    del self.nodes[oldest]
                self.counters['acks'] += 1
            self.status_dirty.set()
        except protocol.ProtocolError as e:
            self._reject('ack', 'bad ack: %s', e)

    # --- workers -----------------------------------------------------------------------------

    def _work(self):
        sources = {}
        try:
            while not self.stopping.is_set():
                try:
                    item = self.requests.get(timeout=1.0)
                except queue.Empty:
                    continue
                if item is None:
                    break
                try:
                    if isinstance(item, tuple):
                        self._refresh(sources, publish_newest=item[0] == 'connected')
                    else:
                        self._serve(item, sources)
                except Exception as e:
                    # one line per kind of failure: a new kind is never hidden by an old one
                    self.faults(logging.ERROR, 'worker-' + type(e).__name__,
                                'responder: request failed: %s: %s', type(e).__name__, e)
                    log.debug('traceback', exc_info=True)
                    for source in sources.values():
                        source.close()
                    sources.clear()
        finally:
            for source in sources.values():
                source.close()

    def _source(self, sources, key):
        if key not in sources:
            sources[key] = database.SourceDatabase(self.manager_dicts[key])
        return sources[key]

    def _refresh(self, sources, publish_newest=False):
        """Re-read each binding's newest record. After a (re)connection also publish it if
        it was never published live: a record committed just before the primary stopped, or
        while the broker was away, then reaches live secondaries without waiting for the
        next one."""
        for binding in self.options.ordered_bindings():
            key = binding.key
            try:
                source = self._source(sources, key)
                newest = source.newest()
                with self.lock:
                    self.newest[key] = newest
                    unpublished = newest and newest > (self.published.get(key) or 0)
                if publish_newest and unpublished:
                    record = source.record_near(newest, 0)
                    if record is not None:
                        self.publish_live(binding, record, source.previous(newest))
            except Exception as e:
                self.faults(logging.ERROR, 'refresh-' + key,
                            'responder: cannot read binding %s: %s', key, e)
        self.status_dirty.set()

    def _serve(self, request, sources):
        if request.expired():
            log.debug('responder: request of %s since %s expired before it was served',
                      request.node, request.since)
            return
        source = self._source(sources, request.binding.key)
        if request.digest is not None:
            self._serve_digest(request, source)
            return
        records = source.read_page(request.since, request.until, request.limit)
        more = len(records) >= request.limit
        newest = source.newest()
        last = records[-1]['dateTime'] if records else request.since
        common = [('data_binding', request.binding.key), ('protocol', protocol.PROTOCOL)]
        batches = list(protocol.split_batches(records, self.options.batch_size,
                                              self.conn.max_message_bytes,
                                              self.conn.compress, self._oversize)) \
            if records else []
        if not batches:
            batches = [(b'[]', protocol.ENCODING_JSON, 0)]
        for seq, (payload, encoding, count) in enumerate(batches):
            props = common + [('encoding', encoding), ('seq', seq), ('count', count)]
            if seq == len(batches) - 1:
                props += [('end', 1), ('more', 1 if more else 0), ('last', last),
                          ('newest', newest or 0)]
            self.transport.publish(request.response_topic, payload, props,
                                   correlation=request.correlation)
        with self.lock:
            self.counters['pages'] += 1
            self.counters['records_sent'] += len(records)
            if records:
                self.newest[request.binding.key] = max(self.newest.get(request.binding.key)
                                                       or 0, last)
        log.debug('responder: page of %d records (%d messages) for %s since %s to %s',
                  len(records), len(batches), request.node, request.since,
                  request.response_topic)

    def _serve_digest(self, request, source):
        """One message: the digest of the range, read in short pages (SPEC 5.5)."""
        bucket, columns = request.digest
        buckets = source.digest(request.since, request.until, bucket, columns)
        payload, encoding = protocol.encode_batch(buckets, self.conn.compress)
        self.transport.publish(request.response_topic, payload, [
            ('data_binding', request.binding.key), ('protocol', protocol.PROTOCOL),
            ('encoding', encoding), ('seq', 0), ('count', len(buckets)), ('end', 1),
            ('more', 0), ('units', source.unit_system() or 0)],
            correlation=request.correlation)
        with self.lock:
            self.counters['digests'] += 1
        log.debug('responder: digest of %d buckets for %s (%s to %s)', len(buckets),
                  request.node, request.since, request.until)

    def _oversize(self, record, size):
        self.faults(logging.ERROR, 'oversize', 'responder: record %s is %d bytes, more than '
                    'max_message_bytes (%d); not sent', record.get('dateTime'), size,
                    self.conn.max_message_bytes)

    # --- status ------------------------------------------------------------------------------

    def status(self):
        with self.lock:
            bindings = {k: {'newest': self.newest.get(k)} for k in sorted(self.bindings)}
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
                    nodes=nodes, counters=counters)

    def _tick(self):
        """Publish the status when it changed, queue the periodic refresh, and keep the MQTT
        loop running. A failure is logged and the next tick tries again: status publishing
        must never end silently."""
        last_refresh = time.monotonic()
        while not self.stopping.wait(STATUS_INTERVAL):
            try:
                self.transport.revive()
                if time.monotonic() - last_refresh > REFRESH_INTERVAL:
                    last_refresh = time.monotonic()
                    self._queue(('refresh',))
                if self.status_dirty.is_set() and self.transport.connected.is_set():
                    self.status_dirty.clear()
                    self._publish_status()
            except Exception as e:
                if is_termination(e):
                    raise
                self.faults(logging.ERROR, 'ticker-' + type(e).__name__,
                            'responder: status not published: %s: %s', type(e).__name__, e)
                log.debug('traceback', exc_info=True)
                self.status_dirty.set()        # try again at the next tick

    def _publish_status(self):
        status = self.status()
        self.statuses.publish({instance: dict(status, instance=instance, bindings={
            k: v for k, v in status['bindings'].items() if k.startswith(instance + '/')})
            for instance in self.options.instances})


class LegacyServer:
    """Answers protocol-1 requests on a thread of its own, so they never hold up protocol-2
    pages. A protocol-1 requester cannot ask for less than everything, so the answer goes
    out throttle_count records at a time, throttle_sleep seconds apart (the broker's queue
    for a slow requester must not overflow). A newer request for the same response topic
    replaces the answer in progress."""

    def __init__(self, responder):
        self.responder = responder
        self.lock = threading.Lock()
        self.pending = {}              # response topic -> newest request
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name='responder-protocol1',
                                       daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.wake.set()
        self.thread.join(10)

    def submit(self, request):
        with self.lock:
            if request.response_topic not in self.pending and len(self.pending) >= MAX_NODES:
                self.responder.faults(logging.WARNING, 'legacy-busy', 'responder: too many '
                                      'protocol-1 requests; one dropped')
                return
            self.pending[request.response_topic] = request
        self.wake.set()

    def _run(self):
        responder = self.responder
        options = responder.options
        sources = {}
        active = {}                    # response topic -> [request, since, failures, not before]
        try:
            while not responder.stopping.is_set():
                with self.lock:
                    new, self.pending = self.pending, {}
                for topic, request in new.items():
                    active[topic] = [request, request.since, 0, 0.0]
                if not active:
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                now = time.monotonic()
                for topic in list(active):
                    if active[topic][3] <= now:
                        self._answer_part(topic, active, sources)
                if active:
                    responder.stopping.wait(options.throttle_sleep)
        finally:
            for source in sources.values():
                source.close()

    def _answer_part(self, topic, active, sources):
        """Send the next throttle_count records of one answer. A failed read is tried again
        on a new connection, after a pause that doubles up to LEGACY_RETRY_MAX: a
        protocol-1 requester never asks again, so the answer is kept until it is done, a
        newer request replaces it, or the responder stops."""
        responder = self.responder
        request, since, failures, _ = active[topic]
        try:
            source = responder._source(sources, request.binding.key)
            records = source.read_page(since, None, responder.options.throttle_count)
            for record in records:
                responder.transport.publish(topic, protocol.encode_json(record),
                                            [('data_binding', request.binding.key)])
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
            for source in sources.values():
                source.close()
            sources.clear()
            active[topic] = [request, since, failures, time.monotonic() + pause]
            return
        if len(records) < responder.options.throttle_count:
            del active[topic]
            log.debug('responder: protocol-1 answer since %s to %s done', request.since,
                      topic)
        else:
            active[topic] = [request, since, 0, 0.0]


class MQTTResponder(StdService):
    """The WeeWX service: publishes each new archive record and answers requests."""

    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        self.responder = None
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
            self._publish(event.record['dateTime'], event.record)
        except Exception as e:    # never harm the primary
            if is_termination(e):
                raise
            log.error('responder: new_archive_record failed: %s', e)

    def _publish(self, ts, main_record=None, newest_only=False):
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
                prev = database.previous_timestamp(manager, record['dateTime'])
                self.responder.publish_live(binding, record, prev)
            except Exception as e:
                if is_termination(e):
                    raise
                self.responder.faults(logging.ERROR, 'live-' + binding.key,
                                      'responder: cannot publish %s record %s: %s: %s',
                                      binding.key, ts, type(e).__name__, e)

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
