"""Verify and repair (SPEC 5.5), standalone: compare a range of each binding with the
primary through digests, and re-fetch the buckets that differ.

It uses an MQTT client of its own (client id `<clientid>-verify`, answers on its own
response topic) and its own database connections, so a running driver is not disturbed.
"""

import dataclasses
import logging
import queue
import time

import weedb

from . import database
from . import protocol
from .transport import Transport

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
    prepared = [store.prepare(r, key) for r in records if start <= r['dateTime'] <= last]
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
                for record in batch if isinstance(batch, list) else []:
                    records.append(protocol.validate_record(record))
            props = parts[-1][0]
            if not protocol.int_property(props, 'more', 0):
                return records
            since = protocol.int_property(props, 'last', since)

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
    daily-summary updates); answers reach it through the replica's inbox."""

    def __init__(self, replica):
        self.replica = replica
        options = replica.requester.options
        # one digest request covers the whole window
        self.days = min(options.verify_days, protocol.MAX_DIGEST_BUCKETS - 1)
        self.timeout = options.page_timeout
        self.due = False
        self.next_time = None          # monotonic time of the next daily verification
        self.correlation = None        # of the request being answered; None when idle
        self.phase = None              # 'digest' or 'records'
        self.parts = {}                # seq -> decoded payload of the answer so far
        self.end_seq = None            # seq of the answer's last message, once seen
        self.asked_at = 0.0
        self.since = self.until = None
        self.columns = None
        self.dates_only = False        # unit systems differ: compare dateTime only
        self.differing = []            # bucket starts still to repair
        self.records = []              # the primary's records of the bucket being fetched
        self.verified = None           # wall-clock time of the last complete verification
        self.repaired = 0              # days repaired since start

    @property
    def key(self):
        return self.replica.key

    def expects(self, correlation):
        """Is this the answer we wait for? (loop thread)"""
        return correlation is not None and correlation == self.correlation

    def schedule(self):
        """Verify at the next quiet moment (after a catch-up)."""
        self.due = True

    def cancel(self):
        """A catch-up starts: what is being compared may change; verify again after it."""
        self.correlation = None
        self.parts = {}
        self.differing = []
        self.records = []

    def tick(self):
        """Called when the replica is idle: start a due verification, give up a silent one."""
        now = time.monotonic()
        replica = self.replica
        if self.correlation is not None:
            if now - self.asked_at > self.timeout:
                replica.faults(logging.WARNING, 'verify', 'requester: %s: no answer to the '
                               'verification for %.0f s; trying again in %.0f min', self.key,
                               now - self.asked_at, RETRY_INTERVAL / 60)
                self._finish(RETRY_INTERVAL, complete=False)
            return
        if self.next_time is not None and now >= self.next_time:
            self.due = True
        if not self.due or not self.days or replica.catching_up or replica.legacy \
                or not replica.position or not replica.requester.transport.connected.is_set():
            return
        self.due = False
        self.since, self.until = window(replica.position, self.days)
        self._ask_digest()

    # --- asking ------------------------------------------------------------------------------

    def _ask_digest(self):
        store = self.replica.store
        self.columns = ['dateTime'] if self.dates_only else list(store.columns)
        self._ask('digest', lambda: self.replica.requester.send_digest(
            self.replica.binding, self.since, self.until, BUCKET, self.columns))

    def _ask_records(self, since):
        last = min(self.differing[0] + BUCKET - 1, self.until)
        self._ask('records', lambda: self.replica.requester.send_request(
            self.replica.binding, since, last, replace=True))

    def _ask(self, phase, send):
        self.phase = phase
        self.parts = {}
        self.end_seq = None
        self.asked_at = time.monotonic()
        self.correlation = send()

    # --- answers -----------------------------------------------------------------------------

    def on_answer(self, item):
        """One message of an answer (the replica's owning thread)."""
        if item.correlation != self.correlation:
            return                     # an answer to a request given up
        props = item.props
        if props.get('error'):
            self.replica.faults(logging.WARNING, 'verify', 'requester: %s: the responder '
                                'refused the verification: %s', self.key, props['error'])
            self._finish(RETRY_INTERVAL, complete=False)
            return
        seq = props.get('seq') or 0
        self.parts.setdefault(seq, item.records)
        if props.get('end'):
            self.end_seq = seq
        if self.end_seq is None or len(self.parts) <= self.end_seq:
            return
        payloads = [self.parts[s] for s in sorted(self.parts)]
        self.parts = {}
        self.end_seq = None
        if self.phase == 'digest':
            self._on_digest(payloads[0], props)
        else:
            self._on_records(payloads, props)

    def _on_digest(self, buckets, props):
        store = self.replica.store
        units = props.get('units')
        if units and store.unit_system() and units != store.unit_system() \
                and not self.dates_only:
            self.dates_only = True     # converted values never match exactly
            self._ask_digest()
            return
        remote = [b for b in buckets if isinstance(b, list) and len(b) == 3] \
            if isinstance(buckets, list) else []
        local = store.digest(self.since, self.until, BUCKET, self.columns)
        self.differing = protocol.differing_buckets(local, remote)
        if not self.differing:
            log.info('requester: %s: verified %s to %s: in sync', self.key,
                     when(self.since + 1), when(self.until))
            self._finish(VERIFY_INTERVAL)
            return
        log.warning('requester: %s: %d day(s) differ from the primary (%s); fetching them '
                    'again', self.key, len(self.differing),
                    ', '.join(when(start)[:10] for start in self.differing[:5])
                    + (', ...' if len(self.differing) > 5 else ''))
        self.records = []
        self._ask_records(self.differing[0] - 1)

    def _on_records(self, payloads, props):
        try:
            for batch in payloads:
                if not isinstance(batch, list):
                    raise protocol.ProtocolError('a page is not a list of records')
                self.records.extend(protocol.validate_record(r) for r in batch)
        except protocol.ProtocolError as e:
            # a partial day must not replace a whole one
            self.replica.faults(logging.WARNING, 'verify', 'requester: %s: bad record in '
                                'the repair of %s: %s; not repaired', self.key,
                                when(self.differing[0]), e)
            self._finish(RETRY_INTERVAL, complete=False)
            return
        if props.get('more') and props.get('last') is not None:
            self._ask_records(props['last'])
            return
        start = self.differing.pop(0)
        stored = repair_bucket(self.replica.store, self.key, start, self.until, self.records)
        self.records = []
        self.repaired += 1
        log.info('requester: %s: repaired %s: %d records from the primary', self.key,
                 when(start)[:10], stored)
        if self.differing:
            self._ask_records(self.differing[0] - 1)
        else:
            self._finish(VERIFY_INTERVAL)

    def _finish(self, again_in, complete=True):
        self.correlation = None
        self.parts = {}
        self.differing = []
        self.records = []
        self.next_time = time.monotonic() + again_in
        if complete:
            self.verified = int(time.time())
        self.replica.ack_due = True    # the status tells when we last verified
