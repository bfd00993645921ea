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


class VerifyError(Exception):
    """The primary did not answer, or refused."""


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
                start = until - days * 86400
                since = start - start % BUCKET - 1
            differing = self._compare(binding, store, since, until)
            if not differing:
                self.out('%s: in sync from %s to %s' % (binding.key, _when(since + 1),
                                                        _when(until)))
                return True
            if not repair:
                return False
            for start in differing:
                records = self.records(binding, start - 1, start + BUCKET - 1)
                prepared = [store.prepare(r, binding.key) for r in records]
                store.replace_range(start - 1, start + BUCKET - 1, prepared)
                self.out('%s: repaired %s (%d records)' % (binding.key, _when(start),
                                                           len(prepared)))
            still = self._compare(binding, store, since, until, quiet=True)
            for start in still:
                self.out('%s: %s still differs after repair' % (binding.key, _when(start)))
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
                             % (binding.key, _when(start), (ours.get(start) or [0, 0])[1],
                                (theirs.get(start) or [0, 0])[1]))
            since = stop
        return differing


def _when(ts):
    return time.strftime('%Y-%m-%d %H:%M', time.localtime(ts))
