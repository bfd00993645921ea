"""Verify and repair (SPEC 5.5): compare a range of each binding with the primary through
digests, and re-fetch the buckets that differ.

Verifier is the `verify` command: an MQTT client of its own (client id `<clientid>-verify`,
answers on its own response topic) and its own database connections, so a running driver
is not disturbed. AutoVerifier is the requester's own verification after every catch-up
and once a day, run by a replica on the thread that owns its database.
"""

import collections
import dataclasses
import logging
import queue
import time

import weedb

from . import database
from . import protocol
from .transport import Transport, is_termination

log = logging.getLogger(__name__)

BUCKET = 86400
VERIFY_INTERVAL = 86400.0   # the requester verifies once a day (and after every catch-up)
RETRY_INTERVAL = 600.0      # and again this long after a verification that failed


class VerifyError(Exception):
    """The primary did not answer, or refused."""


def window(until, days):
    """(since, until) covering whole buckets: the last `days` days up to until (since is
    exclusive, as in every request)."""
    start = until - days * BUCKET
    return start - start % BUCKET - 1, until


def repair_bucket(store, key, start, until, records):
    """Make the bucket starting at `start` (up to `until`) exactly the primary's `records`:
    replaced in one transaction, daily summaries rebuilt. The number of records stored."""
    last = min(start + BUCKET - 1, until)
    unique = {r['dateTime']: r for r in records if start <= r['dateTime'] <= last}
    prepared = [store.prepare(unique[ts], key) for ts in sorted(unique)]
    store.replace_range(start - 1, last, prepared)
    return len(prepared)


def when(ts):
    return time.strftime('%Y-%m-%d %H:%M', time.localtime(ts))


class Verifier:
    """Asks one responder for digests and pages; everything on the calling thread."""

    def __init__(self, options, config_dict, timeout=None, out=print):
        self.options = options
        self.config_dict = config_dict
        self.out = out
        self.timeout = timeout or options.page_timeout
        conn = options.connection
        self.conn = dataclasses.replace(conn, clientid=conn.clientid + '-verify',
                                        session_expiry_interval=0)
        self.response_topic = protocol.response_topic(self.conn.response_topic,
                                                      self.conn.clientid)
        self.replies = queue.Queue()
        self.correlation = None
        self.transport = Transport(self.conn, [self.response_topic], self._on_message,
                                   name='verify')

    def _on_message(self, message):
        correlation = getattr(message.properties, 'CorrelationData', None)
        if correlation is not None and correlation == self.correlation:
            self.replies.put(message)

    # --- asking ------------------------------------------------------------------------------

    def _ask(self, binding, payload, props):
        """Send a request; return [(user properties, decoded payload)] of its answer (one
        page, in seq order)."""
        self.correlation = correlation = protocol.new_correlation()
        while not self.replies.empty():
            self.replies.get_nowait()
        self.transport.publish(
            protocol.request_topic(self.conn.request_topic, binding.instance), payload,
            [('data_binding', binding.key), ('protocol', protocol.PROTOCOL),
             ('node', self.conn.clientid)] + props,
            correlation=correlation, response_topic=self.response_topic,
            expiry=max(int(self.timeout), 1))
        parts, deadline, end = {}, time.monotonic() + self.timeout, None
        while end is None or len(parts) <= end:
            try:
                message = self.replies.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise VerifyError('no answer from the responder for %s within %.0f s'
                                  % (binding.key, self.timeout))
            reply = protocol.user_properties(message.properties)
            if reply.get('error'):
                raise VerifyError('the responder refused %s: %s' % (binding.key,
                                                                    reply['error']))
            seq = protocol.int_property(reply, 'seq', 0)
            parts[seq] = (reply, protocol.decode_payload(message.payload,
                                                         reply.get('encoding')))
            if protocol.int_property(reply, 'end', 0):
                end = seq
        return [parts[seq] for seq in sorted(parts)]

    def digest(self, binding, since, until, columns):
        """(buckets, unit system) of the primary."""
        (props, buckets), = self._ask(binding, protocol.encode_json(
            {'since': since, 'until': until, 'bucket': BUCKET, 'columns': columns}),
            [('op', protocol.OP_DIGEST)])
        if not isinstance(buckets, list):
            raise VerifyError('the digest of %s is not a list' % binding.key)
        return buckets, protocol.int_property(props, 'units', 0)

    def records(self, binding, since, until):
        """Every record of the primary with since < dateTime <= until, page by page."""
        records = []
        while True:
            parts = self._ask(binding, str(int(since)).encode('ascii'),
                              [('op', protocol.OP_RECORDS), ('limit', self.options.page_size),
                               ('until', until), ('replace', 1)])
            for _, batch in parts:
                if not isinstance(batch, list):
                    raise protocol.ProtocolError('a page is not a list of records')
                records.extend(protocol.validate_record(record) for record in batch)
            props = parts[-1][0]
            if not protocol.int_property(props, 'more', 0):
                return records
            following = protocol.int_property(props, 'last', None)
            if following is None or not since < following <= until:
                raise protocol.ProtocolError('a page ends with more=1 and last=%s' % following)
            since = following

    def oldest(self, binding):
        """dateTime of the primary's oldest record, or None."""
        parts = self._ask(binding, b'0', [('op', protocol.OP_RECORDS), ('limit', 1)])
        for _, batch in parts:
            if batch:
                return batch[0]['dateTime']
        return None

    # --- verifying ---------------------------------------------------------------------------

    def run(self, days=None, repair=False):
        """Verify (and repair) every binding. True if all are in sync at the end."""
        self.transport.start()
        try:
            if not self.transport.wait_connected(15):
                raise VerifyError(self.transport.connect_error or 'cannot reach the broker')
            return all([self.verify_binding(binding, days, repair)
                        for binding in self.options.ordered_bindings()])
        finally:
            self.transport.stop()

    def verify_binding(self, binding, days, repair):
        try:
            return self._verify_binding(binding, days, repair)
        except protocol.ProtocolError as e:
            raise VerifyError('the responder sent a bad answer for %s: %s' % (binding.key, e))

    def _verify_binding(self, binding, days, repair):
        mgr_dict = database.manager_dict(self.config_dict, binding.secondary_data_binding)
        try:
            store = database.TargetDatabase(mgr_dict, initialize=False)
        except weedb.DatabaseError as e:
            raise LookupError("database of binding '%s' is not usable: %s"
                              % (binding.secondary_data_binding, e))
        try:
            until = store.newest() or int(time.time())
            if days is None:
                oldest = [self.oldest(binding)] + [r['dateTime']
                                                   for r in store.read_page(0, None, 1)]
                oldest = [t for t in oldest if t]
                if not oldest:
                    self.out('%s: no records on either side' % binding.key)
                    return True
                since = min(oldest) - min(oldest) % BUCKET - 1
            else:
                since, until = window(until, days)
            differing = self._compare(binding, store, since, until)
            if not differing:
                self.out('%s: in sync from %s to %s' % (binding.key, when(since + 1),
                                                        when(until)))
                return True
            if not repair:
                return False
            for start in differing:
                records = self.records(binding, start - 1, min(start + BUCKET - 1, until))
                stored = repair_bucket(store, binding.key, start, until, records)
                self.out('%s: repaired %s (%d records)' % (binding.key, when(start), stored))
            still = self._compare(binding, store, since, until, quiet=True)
            for start in still:
                self.out('%s: %s still differs after repair' % (binding.key, when(start)))
            return not still
        finally:
            store.close()

    def _compare(self, binding, store, since, until, quiet=False):
        """Bucket starts that differ between the primary and here in (since, until]."""
        differing = []
        window = protocol.MAX_DIGEST_BUCKETS * BUCKET
        while since < until:
            stop = min(since + window, until)
            columns = list(store.columns)
            remote, units = self.digest(binding, since, stop, columns)
            if units and store.unit_system() and units != store.unit_system():
                columns = ['dateTime']        # converted values never match exactly
                remote, _ = self.digest(binding, since, stop, columns)
            local = store.digest(since, stop, BUCKET, columns)
            ours = {b[0]: b for b in local}
            theirs = {b[0]: b for b in remote if isinstance(b, list) and len(b) == 3}
            for start in protocol.differing_buckets(local, list(theirs.values())):
                differing.append(start)
                if not quiet:
                    self.out('%s: %s differs: %d records here, %d on the primary'
                             % (binding.key, when(start), (ours.get(start) or [0, 0])[1],
                                (theirs.get(start) or [0, 0])[1]))
            since = stop
        return differing


class AutoVerifier:
    """The requester's own verification of one binding (SPEC 5.5): after every catch-up and
    once a day it compares the last verify_days with the primary's digest, fetches each day
    that differs again (`replace=1`) and replaces it in one transaction.

    A state machine driven by the replica on the thread that owns the binding's database
    (the engine thread for `main` under weewxd, so a repair never races the engine's own
    daily-summary updates); answers reach it through the replica's inbox.

    It is careful, as it runs unattended: a day is replaced only by exactly the records the
    primary's digest counted, and never by fewer records than this station has (a primary
    restored from an old backup, or pointed at the wrong database, must not empty its
    secondaries: `verify --repair` does that on request). Anything unexpected in an answer
    changes nothing and the verification is tried again later."""

    def __init__(self, replica):
        self.replica = replica
        options = replica.requester.options
        self.days = options.verify_days
        if self.days >= protocol.MAX_DIGEST_BUCKETS:
            log.warning('requester: %s: verify_days %d is more than one verification can '
                        'cover; verifying the last %d days', replica.key, self.days,
                        protocol.MAX_DIGEST_BUCKETS - 1)
            self.days = protocol.MAX_DIGEST_BUCKETS - 1
        self.timeout = options.page_timeout
        self.due = False
        self.next_time = None          # monotonic time of the next daily verification
        self.correlation = None        # of the request being answered; None when idle
        self.old = collections.deque(maxlen=16)     # correlations given up or answered
        self.phase = None              # 'digest' or 'records'
        self.parts = {}                # seq -> decoded payload of the answer so far
        self.end = None                # properties of the answer's last message, once seen
        self.asked_at = 0.0
        self.since = self.until = None
        self.columns = None
        self.dates_only = False        # unit systems differ: compare dateTime only
        self.repairs = []              # [(bucket start, records the primary counted)]
        self.page_since = None         # since of the page being fetched
        self.records = {}              # dateTime -> the primary's record, of the bucket
        self.verified = None           # wall-clock time of the last complete verification
        self.repaired = 0              # days repaired since start

    @property
    def key(self):
        return self.replica.key

    def expects(self, correlation):
        """Is this the answer we wait for? (loop thread)"""
        return correlation is not None and correlation == self.correlation

    def expected(self, correlation):
        """Was this the answer to a request given up or answered already? (loop thread)"""
        return correlation is not None and correlation in self.old

    def schedule(self):
        """Verify at the next quiet moment (after a catch-up)."""
        self.due = True

    def cancel(self):
        """A catch-up starts: what is being compared may change; verify again after it."""
        if self.correlation is not None:
            self.due = True
        self._forget()

    def _forget(self):
        if self.correlation is not None:
            self.old.append(self.correlation)
        self.correlation = None
        self.parts = {}
        self.end = None
        self.repairs = []
        self.records = {}

    def tick(self):
        """Called when the replica is idle: start a due verification, give up a silent one."""
        now = time.monotonic()
        replica = self.replica
        if self.correlation is not None:
            if now - self.asked_at > self.timeout:
                self._give_up('no answer to the verification for %.0f s'
                              % (now - self.asked_at))
            return
        if self.next_time is not None and now >= self.next_time:
            self.due = True
        if not self.due or not self.days or replica.catching_up or replica.legacy \
                or not replica.position or not replica.requester.transport.connected.is_set():
            return
        self.due = False
        until = replica.position
        if replica.primary_newest:
            # what the primary does not have (yet) is not compared
            until = min(until, replica.primary_newest)
        self.since, self.until = window(until, self.days)
        self.dates_only = False
        self._guarded(self._ask_digest)

    def _give_up(self, why):
        self.replica.faults(logging.WARNING, 'verify', 'requester: %s: %s; verifying again '
                            'in %.0f min', self.key, why, RETRY_INTERVAL / 60)
        self._finish(RETRY_INTERVAL, complete=False)

    def _guarded(self, action, *args):
        """Run a step; a failure (the database locked by a report, say) is logged and the
        verification tried again later, never raised into the engine."""
        try:
            action(*args)
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('traceback', exc_info=True)
            self._give_up('the verification failed: %s: %s' % (type(e).__name__, e))

    # --- asking ------------------------------------------------------------------------------

    def _ask_digest(self):
        store = self.replica.store
        self.columns = ['dateTime'] if self.dates_only else list(store.columns)
        self._ask('digest', self.replica.requester.send_digest, self.since, self.until,
                  BUCKET, self.columns)

    def _ask_records(self, since):
        self.page_since = since
        self._ask('records', self.replica.requester.send_request, since, self._bucket_end(),
                  True)

    def _bucket_end(self):
        return min(self.repairs[0][0] + BUCKET - 1, self.until)

    def _ask(self, phase, send, *args):
        if self.correlation is not None:
            self.old.append(self.correlation)
        self.phase = phase
        self.parts = {}
        self.end = None
        self.asked_at = time.monotonic()
        # known before the request leaves, so its answer is never taken for a stranger's
        self.correlation = protocol.new_correlation()
        send(self.replica.binding, *args, correlation=self.correlation)

    # --- answers -----------------------------------------------------------------------------

    def on_answer(self, item):
        """One message of an answer (the replica's owning thread)."""
        if item.correlation != self.correlation:
            return                     # an answer to a request given up
        self._guarded(self._on_message, item)

    def _on_message(self, item):
        props = item.props
        if props.get('error'):
            self._give_up('the responder refused the verification: %s' % props['error'])
            return
        seq = props.get('seq') or 0
        self.parts.setdefault(seq, item.records)
        if props.get('end'):
            self.end = props
        last_seq = None if self.end is None else (self.end.get('seq') or 0)
        if last_seq is None or sorted(self.parts) != list(range(last_seq + 1)):
            if last_seq is not None and max(self.parts) > last_seq:
                self._give_up('an answer has a message after its last one')
            return
        payloads = [self.parts[s] for s in sorted(self.parts)]
        end, self.parts, self.end = self.end, {}, None
        try:
            if self.phase == 'digest':
                self._on_digest(payloads[0], end)
            else:
                self._on_records(payloads, end)
        except protocol.ProtocolError as e:
            self._give_up('bad answer to the verification: %s' % e)

    def _remote_buckets(self, buckets):
        """The primary's digest, checked: [start, count, hex] with start a bucket start in
        the window, counts positive."""
        if not isinstance(buckets, list):
            raise protocol.ProtocolError('the digest is not a list')
        remote = {}
        for entry in buckets:
            if not (isinstance(entry, list) and len(entry) == 3
                    and all(protocol.plain_int(v) for v in entry[:2]) and isinstance(entry[2], str)
                    and entry[0] % BUCKET == 0 and self.since < entry[0] + BUCKET - 1
                    and entry[0] <= self.until and entry[1] > 0):
                raise protocol.ProtocolError('digest entry %.60r is not [bucket start, count, '
                                             'digest] within the range asked for' % (entry,))
            remote[entry[0]] = entry
        return remote

    def _on_digest(self, buckets, props):
        store = self.replica.store
        units = props.get('units')
        if units and store.unit_system() and units != store.unit_system() \
                and not self.dates_only:
            self.dates_only = True     # converted values never match exactly
            self._ask_digest()
            return
        remote = self._remote_buckets(buckets)
        local = {entry[0]: entry for entry in
                 store.digest(self.since, self.until, BUCKET, self.columns)}
        differing = protocol.differing_buckets(list(local.values()), list(remote.values()))
        self.repairs = []
        for start in differing:
            theirs = remote.get(start, [start, 0])[1]
            ours = local.get(start, [start, 0])[1]
            if theirs < ours:
                self.replica.faults(
                    logging.WARNING, 'verify-fewer', 'requester: %s: %s has %d records '
                    'here but %d on the primary; left as it is (`verify --repair` makes it '
                    'the primary\'s copy)', self.key, when(start)[:10], ours, theirs)
            else:
                self.repairs.append((start, theirs))
        if not self.repairs:
            if not differing:
                log.info('requester: %s: verified %s to %s: in sync', self.key,
                         when(self.since + 1), when(self.until))
            self._finish(VERIFY_INTERVAL)
            return
        log.warning('requester: %s: %d day(s) differ from the primary (%s); fetching them '
                    'again', self.key, len(self.repairs),
                    ', '.join(when(start)[:10] for start, _ in self.repairs[:5])
                    + (', ...' if len(self.repairs) > 5 else ''))
        self.records = {}
        self._ask_records(self.repairs[0][0] - 1)

    def _on_records(self, payloads, props):
        start, counted = self.repairs[0]
        last = self._bucket_end()
        for batch in payloads:
            if not isinstance(batch, list):
                raise protocol.ProtocolError('a page is not a list of records')
            for record in batch:
                record = protocol.validate_record(record)
                if not self.page_since < record['dateTime'] <= last:
                    raise protocol.ProtocolError('record %s is outside the range asked for'
                                                 % record['dateTime'])
                self.records[record['dateTime']] = record      # a duplicate counts once
        if len(self.records) > counted:
            raise protocol.ProtocolError('more records for %s than the digest counted (%d)'
                                         % (when(start)[:10], counted))
        if props.get('more'):
            following = props.get('last')
            if following is None or not self.page_since < following <= last:
                raise protocol.ProtocolError('a page ends with more=1 and last=%s' % following)
            self._ask_records(following)
            return
        if len(self.records) != counted:
            # the primary's copy changed since its digest (or the answer is short)
            self._give_up('%s: %d records fetched, %d in the digest'
                          % (when(start)[:10], len(self.records), counted))
            return
        self.repairs.pop(0)
        stored = repair_bucket(self.replica.store, self.key, start, self.until,
                               [self.records[ts] for ts in sorted(self.records)])
        self.records = {}
        self.repaired += 1
        log.info('requester: %s: repaired %s: %d records from the primary', self.key,
                 when(start)[:10], stored)
        if self.repairs:
            self._ask_records(self.repairs[0][0] - 1)
        else:
            self._finish(VERIFY_INTERVAL)

    def _finish(self, again_in, complete=True):
        self._forget()
        self.next_time = time.monotonic() + again_in
        if complete:
            self.verified = int(time.time())
        self.replica.ack_due = True    # the status tells when we last verified
