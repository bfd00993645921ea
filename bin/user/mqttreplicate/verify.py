"""Verify and repair (SPEC 5.5): compare a range of each binding with the primary through
digests, and re-fetch the buckets that differ.

The checks both verifiers make are written once, in the core below (no MQTT, no threads):
Comparison (ask which digest, check the primary's digest reply, find the buckets that
differ, the unit systems), plan_repairs(), Answer (the messages of one answer) and
BucketFetch (the primary's records of one bucket, page by page, checked).

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

from . import database, messages, protocol, summaries, target
from .transport import Transport, is_termination

log = logging.getLogger(__name__)

BUCKET = 86400
VERIFY_INTERVAL = 86400.0   # the requester verifies once a day (and after every catch-up)
RETRY_INTERVAL = 600.0      # and again this long after a verification that failed
DATES_ONLY = ('dateTime',)  # what is compared when the unit systems differ


class VerifyError(Exception):
    """The primary did not answer, or refused."""


class NoAnswer(VerifyError):
    """The responder of an instance did not answer (the command line's exit code 4)."""

    def __init__(self, text, instance):
        super().__init__(text)
        self.instance = instance


class Refused(Exception):
    """The responder answered a verification's request with an error."""


def window(until, days):
    """(since, until) covering whole buckets: the last `days` days up to until (since is
    exclusive, as in every request)."""
    start = until - days * BUCKET
    return start - start % BUCKET - 1, until


def bucket_range(start, until):
    """(since, last) of the bucket starting at `start`, cut at until: the records with
    since < dateTime <= last."""
    return start - 1, min(start + BUCKET - 1, until)


def repair_bucket(store, key, start, until, records):
    """Make the bucket starting at `start` (up to `until`) exactly the primary's `records`:
    replaced in one transaction, the daily summaries of the days touched rebuilt (where
    they then differ from the primary's, the next comparison finds a day whose summaries
    only differ). The number of records stored."""
    since, last = bucket_range(start, until)
    unique = {r['dateTime']: r for r in records if since < r['dateTime'] <= last}
    prepared = [store.prepare(unique[ts], key) for ts in sorted(unique)]
    store.replace_range(since, last, prepared)
    return len(prepared)


def summaries_days(start):
    """(first, last): the starts of the first and the last local day that start in the
    bucket starting at `start`, whose daily summaries it holds in a digest (two where a
    change of summer time puts two midnights in one UTC day, none where first > last)."""
    first = database.day_start(start + 1)
    if first < start:
        first = database.day_stop(start + 1)
    return first, database.day_start(start + BUCKET)


def when(ts):
    return time.strftime('%Y-%m-%d %H:%M', time.localtime(ts))


# ---------------------------------------------------------------------------------------------
#  The core: what both verifiers check, without MQTT or threads
# ---------------------------------------------------------------------------------------------

def units_differ(ours, theirs):
    """Do two unit systems differ? Values converted from one to the other never match to the
    last bit, so only dateTime can then be compared. An unknown one (None or 0) differs from
    none."""
    return bool(ours and theirs and ours != theirs)


def remote_buckets(reply, since, until):
    """The buckets of the primary's DigestReply for (since, until], checked: {bucket start:
    [start, count, hex]}, each start a bucket start whose bucket overlaps the range, each count
    positive. Raises ProtocolError. (DigestReply.decode checked the shape of each entry.)"""
    remote = {}
    for entry in reply.buckets:
        start, count = entry[0], entry[1]
        if not (start % BUCKET == 0 and since < start + BUCKET - 1 and start <= until
                and count > 0):
            raise protocol.ProtocolError('digest entry %.60r is not [bucket start, count, '
                                         'digest] within the range asked for' % (entry,))
        remote[start] = entry
    return remote


@dataclasses.dataclass(frozen=True)
class Difference:
    """A bucket that differs, with its number of records on each side (0: none there);
    summaries_only: its records are the same, the daily summaries of its days are not."""
    start: int
    here: int
    primary: int
    summaries_only: bool = False

    def describe(self):
        if self.summaries_only:
            return 'daily summaries differ (%d records on both sides)' % self.here
        return '%d records here, %d on the primary' % (self.here, self.primary)


def differences(local, remote):
    """[Difference] of the buckets whose count or digest differ, oldest first. local: a
    digest list of this station's; remote: remote_buckets() of the primary's. The digests
    of the daily summaries (a 4th entry) are compared only if both sides have them."""
    if not all(len(entry) == 4 for entry in list(local) + list(remote.values())):
        local = [entry[:3] for entry in local]
        remote = {start: entry[:3] for start, entry in remote.items()}
    ours = {entry[0]: entry for entry in local}
    result = []
    for start in summaries.differing_buckets(local, list(remote.values())):
        mine, theirs = ours.get(start), remote.get(start)
        same_records = mine is not None and theirs is not None and mine[1:3] == theirs[1:3]
        result.append(Difference(start, mine[1] if mine else 0, theirs[1] if theirs else 0,
                                 same_records))
    return result


def replaces_records(repairs):
    """Do these repairs replace records (and so rebuild their days' summaries here, which
    a comparison right after can then make the primary's)?"""
    return any(not d.summaries_only for d in repairs)


def today():
    """Days since the epoch (UTC): which slice of older history a verification compares."""
    return int(time.time() // BUCKET)


def older_slice(oldest, window_since, cycle_days, day_number):
    """(since, until) of the history before the window (since, ...] that the verification
    of day `day_number` (days since the epoch) compares besides the window, or None: the
    buckets from the oldest record's on are cut into at most cycle_days slices of whole
    buckets (at most MAX_DIGEST_BUCKETS - 1 each, one digest), taken in turn, a slice a
    day, so that every day is compared at least once every cycle_days days (anti-entropy:
    a record changed on the primary long ago, or damage here, is found)."""
    if not cycle_days or not oldest:
        return None
    first = oldest - oldest % BUCKET
    end = window_since + 1                       # the window's first bucket
    buckets = (end - first) // BUCKET
    if buckets <= 0:
        return None
    per = min(-(-buckets // cycle_days), summaries.MAX_DIGEST_BUCKETS - 1)
    parts = -(-buckets // per)
    start = first + (day_number % parts) * per * BUCKET
    return start - 1, min(start + per * BUCKET, end) - 1


def with_days(repairs, summaries):
    """The repairs in the order to make them: the buckets whose records are replaced, then,
    if the daily summaries are compared (summaries), the primary's summaries of every day
    that a replacement rebuilds here (the days that start in its bucket and in the bucket
    before: the local day that the bucket's first record belongs to starts before the UTC
    day), and of the buckets whose summaries alone differ."""
    if not summaries:
        return list(repairs)
    replaced = [d for d in repairs if not d.summaries_only]
    days = {d.start: d for d in repairs if d.summaries_only}
    for d in replaced:
        for start in (d.start - BUCKET, d.start):
            days.setdefault(start, Difference(start, 0, 0, True))
    return replaced + [days[start] for start in sorted(days)]


def plan_repairs(differing, careful):
    """(buckets to repair, buckets left alone) of [Difference]. careful (the unattended
    verification) never replaces a bucket by fewer records than this station has: a primary
    restored from an old backup, or pointed at the wrong database, must not empty its
    secondaries (`verify --repair`, not careful, does that on request)."""
    if not careful:
        return list(differing), []
    return ([d for d in differing if d.primary >= d.here],
            [d for d in differing if d.primary < d.here])


class Comparison:
    """The comparison of (since, until] of a store with the primary's digest of it.

    Ask for the digest of `columns` (with the daily summaries' if `summaries`); take() the
    reply. Where the unit systems differ, take() asks (once) for the digest of dateTime only
    instead, without the summaries."""

    def __init__(self, store, since, until, summaries=False):
        self.store = store
        self.since, self.until = since, until
        self.dates_only = False
        self.with_summaries = summaries

    @property
    def summaries(self):
        """Are the daily summaries compared too?"""
        return self.with_summaries and not self.dates_only

    @property
    def columns(self):
        return list(DATES_ONLY) if self.dates_only else list(self.store.columns)

    def take(self, reply):
        """[Difference] of a DigestReply, or None: ask again for `columns` (dateTime only now,
        the unit systems differ). Raises ProtocolError for a digest outside the range."""
        if not self.dates_only and units_differ(self.store.unit_system(), reply.units):
            self.dates_only = True
            return None
        remote = remote_buckets(reply, self.since, self.until)
        return differences(self.store.digest(self.since, self.until, BUCKET, self.columns,
                                             self.summaries, self.null_inf), remote)

    @property
    def null_inf(self):
        """Does an infinity count as NULL? Where this database cannot hold one (MySQL
        stores NULL instead)."""
        return not getattr(self.store, 'holds_infinity', True)


class Answer:
    """The messages of one answer to a verification's request, gathered as they come (in any
    order, a copy counted once): one DigestReply, or the Batch messages of one page."""

    def __init__(self, kind):
        self.kind = kind               # messages.DigestReply or messages.Batch
        self.parts = {}                # seq -> message
        self.last_seq = None           # seq of the message that ends the answer, once seen

    def add(self, message):
        """The answer's messages in seq order once all are in, else None. Raises Refused for
        an ErrorReply, ProtocolError for a message that does not belong."""
        if isinstance(message, messages.ErrorReply):
            raise Refused(message.error)
        if not isinstance(message, self.kind):
            raise protocol.ProtocolError('a %s where a %s was asked for'
                                         % (type(message).__name__, self.kind.__name__))
        if self.kind is messages.DigestReply:
            return [message]
        seq = message.seq or 0         # a protocol-1 record never ends an answer
        self.parts.setdefault(seq, message)
        if message.end:
            self.last_seq = seq
        if self.last_seq is None:
            return None
        if max(self.parts) > self.last_seq:
            raise protocol.ProtocolError('an answer has a message after its last one')
        if len(self.parts) <= self.last_seq:
            return None
        return [self.parts[s] for s in range(self.last_seq + 1)]


class BucketFetch:
    """The primary's records of one bucket (cut at until), page by page.

    Every record must be within the range asked for, and good (a page with a rejected record
    is refused whole: a bucket is replaced by exactly the primary's records or not at all); a
    page with more=1 must end at a `last` that advances within the range; a record sent twice
    counts once; with `counted` (the records the digest counted), no more than that."""

    def __init__(self, start, until, counted=None):
        self.start = start
        self.since, self.last = bucket_range(start, until)     # since: of the next page
        self.counted = counted
        self.records = {}              # dateTime -> record

    def add(self, page):
        """Take a page (its Batch messages in seq order). True if another page is to be asked
        for (since < dateTime <= last), False when the bucket is complete. Raises
        ProtocolError."""
        for batch in page:
            if batch.days is not None:
                continue               # (not asked for)
            if batch.rejected:
                raise protocol.ProtocolError('a record of the page is bad: %s'
                                             % batch.rejected[0])
            for record in batch.records:
                if not self.since < record['dateTime'] <= self.last:
                    raise protocol.ProtocolError('record %s is outside the range asked for'
                                                 % record['dateTime'])
                self.records[record['dateTime']] = record
        if self.counted is not None and len(self.records) > self.counted:
            raise protocol.ProtocolError('more records for %s than the digest counted (%d)'
                                         % (when(self.start)[:10], self.counted))
        end = page[-1]
        if not end.more:
            return False
        if end.last is None or not self.since < end.last <= self.last:
            raise protocol.ProtocolError('a page ends with more=1 and last=%s' % end.last)
        self.since = end.last
        return True

    @property
    def missing(self):
        """Records the digest counted that the pages did not bring (0 without a count)."""
        return 0 if self.counted is None else self.counted - len(self.records)

    def result(self):
        return [self.records[ts] for ts in sorted(self.records)]


class DaysFetch:
    """The primary's daily summaries of the day (or days) that start in one bucket, whose
    records are the same on both sides: asked for as a page without records (since =
    until = just after the last day's start, days = just after the first's), answered
    with its kind=days messages."""

    def __init__(self, start):
        self.start = start
        self.day, self.last_day = summaries_days(start)
        self.last_day = max(self.day, self.last_day)
        self.since = self.last = self.last_day + 1       # since = until: no records
        self.days = self.day + 1                         # the summaries from that day on
        self.parts = []

    def add(self, page):
        """Take the page. False: nothing more to ask for. Raises ProtocolError."""
        for batch in page:
            if batch.rejected:
                raise protocol.ProtocolError('the daily summaries are bad: %s'
                                             % batch.rejected[0])
            if batch.records:
                raise protocol.ProtocolError('records where daily summaries only were asked '
                                             'for')
            if batch.days is not None:
                self.parts.append(batch.days)
        return False

    def result(self):
        """summaries.DayRows of the day. Raises ProtocolError if the answer has none."""
        days = summaries.DayRows.merge(self.parts)
        stop = database.day_stop(self.last_day + 1)
        if days is None or not days.first <= self.day < stop <= days.stop:
            raise protocol.ProtocolError('no daily summaries of %s in the answer'
                                         % when(self.day)[:10])
        return days.only(self.day, stop)


# ---------------------------------------------------------------------------------------------
#  The `verify` command
# ---------------------------------------------------------------------------------------------

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

    def _ask(self, binding, wire, kind):
        """Send a request (a Wire); the messages of its answer (a `kind`: one DigestReply, or
        the Batch messages of one page, in seq order)."""
        self.correlation = correlation = protocol.new_correlation()
        while not self.replies.empty():
            self.replies.get_nowait()
        self.transport.publish(
            protocol.request_topic(self.conn.request_topic, binding.instance), wire.payload,
            wire.properties, correlation=correlation, response_topic=self.response_topic,
            expiry=max(int(self.timeout), 1))
        answer, deadline = Answer(kind), time.monotonic() + self.timeout
        while True:
            try:
                message = self.replies.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise NoAnswer('no answer from the responder for %s within %.0f s'
                               % (binding.key, self.timeout), binding.instance) from None
            try:
                gathered = answer.add(messages.decode_answer(messages.Envelope.of(message),
                                                             kind))
            except Refused as e:
                raise VerifyError('the responder refused %s: %s' % (binding.key, e))
            if gathered is not None:
                return gathered

    def digest(self, binding, comparison):
        """The primary's DigestReply for a comparison."""
        (reply,) = self._ask(binding, messages.DigestRequest(
            binding.key, self.conn.clientid, comparison.since, comparison.until, BUCKET,
            tuple(comparison.columns), comparison.summaries, comparison.null_inf).encode(),
            messages.DigestReply)
        return reply

    def records(self, binding, start, until):
        """Every record of the primary in the bucket starting at start (cut at until), page
        by page, checked."""
        fetch = BucketFetch(start, until)
        more = True
        while more:
            more = fetch.add(self._ask(binding, messages.RecordsRequest(
                binding.key, self.conn.clientid, fetch.since, fetch.last,
                self.options.page_size, replace=True,
                layout=protocol.LAYOUT_PACKED).encode(), messages.Batch))
        return fetch.result()

    def day_summaries(self, binding, start):
        """The primary's daily summaries (summaries.DayRows) of the day that starts in the
        bucket starting at start."""
        fetch = DaysFetch(start)
        fetch.add(self._ask(binding, messages.RecordsRequest(
            binding.key, self.conn.clientid, fetch.since, fetch.last, 1, replace=True,
            days=fetch.days).encode(), messages.Batch))
        return fetch.result()

    def summaries_comparable(self, binding, store, until):
        """Can this station's daily summaries be compared with the primary's? Only if it
        keeps them and could store the primary's as they are (one day of them asked for to
        see); if not, says why."""
        if not store.has_summaries:
            return False
        try:
            days = self.day_summaries(binding, until - until % BUCKET - BUCKET)
        except protocol.ProtocolError:
            return False               # none there (an older responder, an empty day)
        why = store.days_mismatch(days)
        if why is not None:
            self.out('%s: daily summaries not compared: they are rebuilt here from the '
                     'archive (%s)' % (binding.key, why))
        return why is None

    def oldest(self, binding):
        """dateTime of the primary's oldest record, or None."""
        page = self._ask(binding, messages.RecordsRequest(binding.key, self.conn.clientid, 0,
                                                          limit=1).encode(), messages.Batch)
        for batch in page:
            if batch.records:
                return batch.records[0]['dateTime']
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
            store = target.TargetDatabase(mgr_dict, initialize=False)
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
            summaries = self.summaries_comparable(binding, store, until)
            differing = self._compare(binding, store, since, until, summaries)
            if not differing:
                self.out('%s: in sync from %s to %s' % (binding.key, when(since + 1),
                                                        when(until)))
                return True
            if not repair:
                return False
            repairs, _ = plan_repairs(differing, careful=False)
            self._repair(binding, store, until, with_days(repairs, summaries))
            still = self._compare(binding, store, since, until, summaries, quiet=True)
            for difference in still:
                self.out('%s: %s still differs after repair' % (binding.key,
                                                               when(difference.start)))
            return not still
        finally:
            store.close()

    def _repair(self, binding, store, until, repairs):
        for difference in repairs:
            if difference.summaries_only:
                stored = store.store_days(self.day_summaries(binding, difference.start))
                self.out('%s: %s %s' % (binding.key, 'repaired the daily summaries of'
                                        if stored else 'could not store the daily summaries '
                                        'of', when(summaries_days(difference.start)[0])[:10]))
                continue
            records = self.records(binding, difference.start, until)
            stored = repair_bucket(store, binding.key, difference.start, until, records)
            self.out('%s: repaired %s (%d records)' % (binding.key, when(difference.start),
                                                      stored))

    def _compare(self, binding, store, since, until, with_summaries, quiet=False):
        """[Difference] between the primary and here in (since, until], in digests of at most
        MAX_DIGEST_BUCKETS buckets; with_summaries: the daily summaries compared too."""
        differing = []
        span = summaries.MAX_DIGEST_BUCKETS * BUCKET
        while since < until:
            comparison = Comparison(store, since, min(since + span, until), with_summaries)
            found = None
            while found is None:
                found = comparison.take(self.digest(binding, comparison))
            if not quiet:
                for difference in found:
                    self.out('%s: %s differs: %s' % (binding.key, when(difference.start),
                                                     difference.describe()))
            differing += found
            since = comparison.until
        return differing


# ---------------------------------------------------------------------------------------------
#  The requester's own verification
# ---------------------------------------------------------------------------------------------

class AutoVerifier:
    """The requester's own verification of one binding (SPEC 5.5): after every catch-up and
    once a day it compares the last verify_days with the primary's digest, fetches each day
    that differs again (`replace=1`) and replaces it in one transaction.

    A state machine driven by the replica on the thread that owns the binding's database
    (the engine thread for `main` under weewxd, so a repair never races the engine's own
    daily-summary updates); answers reach it through the replica's inbox.

    It is careful, as it runs unattended: a day is replaced only by exactly the records the
    primary's digest counted, and never by fewer records than this station has (see
    plan_repairs). Anything unexpected in an answer changes nothing and the verification is
    tried again later.

    Of the replica it uses: key, binding, options (verify_days, page_timeout), store, position,
    primary_newest, busy, faults (a RateLimitedLog), status_changed() and link (connected(),
    send_digest(), send_records())."""

    def __init__(self, replica):
        self.replica = replica
        options = replica.options
        self.days = options.verify_days
        if self.days >= summaries.MAX_DIGEST_BUCKETS:
            log.warning('requester: %s: verify_days %d is more than one verification can '
                        'cover; verifying the last %d days', replica.key, self.days,
                        summaries.MAX_DIGEST_BUCKETS - 1)
            self.days = summaries.MAX_DIGEST_BUCKETS - 1
        self.timeout = options.page_timeout
        self.cycle_days = options.verify_cycle_days
        self.older = None              # (since, until) of the slice of history still to compare
        self.due = False
        self.next_time = None          # monotonic time of the next daily verification
        # (correlation, answer class) of the request being answered, None when idle: one
        # value, so that the loop thread reads both at once
        self.awaited = None
        self.old = collections.deque(maxlen=16)     # correlations given up or answered
        self.answer = None             # Answer to the request being answered
        self.asked_at = 0.0
        self.comparison = None         # Comparison of the last (or current) verification
        self.repairs = []              # [Difference] still to fetch and replace
        self.fetch = None              # BucketFetch of repairs[0]
        self.verified = None           # wall-clock time of the last complete verification
        self.repaired = 0              # days repaired since start
        self.repaired_records = 0      # records those repairs brought
        self.result = None             # the last verification: in sync, repaired, differs,
                                       # failed (docs/seeing.md)
        self.follow_up = False         # this verification follows one that replaced records
        self.planned = []              # the repairs of this verification

    @property
    def key(self):
        return self.replica.key

    @property
    def correlation(self):
        """Of the request being answered; None when idle."""
        awaited = self.awaited
        return awaited[0] if awaited else None

    @property
    def dates_only(self):
        """The unit systems differ: dateTime only is compared."""
        return self.comparison is not None and self.comparison.dates_only

    def expects(self, correlation):
        """The protocol class (DigestReply or Batch) the answer is to be decoded as if it is
        the answer we wait for, else None. (loop thread)"""
        awaited = self.awaited
        if awaited is None or correlation is None or correlation != awaited[0]:
            return None
        return awaited[1]

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
        self.awaited = None
        self.answer = None
        self.repairs = []
        self.fetch = None

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
        if not self.due or not self.days or replica.busy or not replica.position \
                or not replica.link.connected():
            return
        self.due = False
        until = replica.position
        if replica.primary_newest:
            # what the primary does not have (yet) is not compared
            until = min(until, replica.primary_newest)
        # the daily summaries are compared where the primary's are stored as they are
        store = replica.store
        since, until = window(until, self.days)
        self.comparison = Comparison(store, since, until,
                                     summaries=getattr(store, 'copies_days', None) is True)
        self._guarded(self._start, store, since)

    def _start(self, store, since):
        """Ask for the window's digest; the slice of older history follows it."""
        self.older = older_slice(store.oldest(), since, self.cycle_days, today())
        self._ask_digest()

    def _give_up(self, why):
        self.replica.faults(logging.WARNING, 'verify', 'requester: %s: %s; verifying again '
                            'in %.0f min', self.key, why, RETRY_INTERVAL / 60)
        self.result = 'failed'
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
        comparison = self.comparison
        self._ask(messages.DigestReply, self.replica.link.send_digest, comparison.since,
                  comparison.until, BUCKET, comparison.columns, summaries=comparison.summaries,
                  null_inf=comparison.null_inf)

    def _ask_records(self):
        fetch = self.fetch
        days = fetch.days if isinstance(fetch, DaysFetch) else None
        self._ask(messages.Batch, self.replica.link.send_records, fetch.since, fetch.last,
                  True, days=days)

    def _ask(self, kind, send, *args, **kwargs):
        if self.correlation is not None:
            self.old.append(self.correlation)
        self.answer = Answer(kind)
        self.asked_at = time.monotonic()
        # known before the request leaves, so its answer is never taken for a stranger's
        correlation = protocol.new_correlation()
        self.awaited = (correlation, kind)
        send(self.replica.binding, *args, correlation=correlation, **kwargs)

    # --- answers -----------------------------------------------------------------------------

    def on_answer(self, correlation, answer):
        """One message of an answer (the replica's owning thread): a DigestReply, Batch or
        ErrorReply as messages.decode_answer gave it, or the ProtocolError it raised."""
        if correlation is None or correlation != self.correlation:
            return                     # an answer to a request given up
        self._guarded(self._on_answer, answer)

    def _on_answer(self, answer):
        try:
            if isinstance(answer, protocol.ProtocolError):
                raise answer
            gathered = self.answer.add(answer)
            if gathered is None:
                return
            if self.answer.kind is messages.DigestReply:
                self._on_digest(gathered[0])
            else:
                self._on_page(gathered)
        except Refused as e:
            self._give_up('the responder refused the verification: %s' % e)
        except protocol.ProtocolError as e:
            self._give_up('bad answer to the verification: %s' % e)

    def _on_digest(self, reply):
        differing = self.comparison.take(reply)
        if differing is None:
            self._ask_digest()         # dateTime only: the unit systems differ
            return
        repairs, fewer = plan_repairs(differing, careful=True)
        self.repairs = with_days(repairs, self.comparison.summaries)
        self.planned = list(self.repairs)
        for difference in fewer:
            self.replica.faults(
                logging.WARNING, 'verify-fewer', 'requester: %s: %s has %d records '
                'here but %d on the primary; left as it is (`verify --repair` makes it '
                'the primary\'s copy)', self.key, when(difference.start)[:10],
                difference.here, difference.primary)
        if not repairs:
            self.repairs = []
            # fewer records here than there: left as they are, it still differs; the
            # comparison that follows a repair keeps saying repaired
            self.result = 'differs' if differing else \
                'repaired' if self.follow_up else 'in sync'
            self.follow_up = False
            if not differing:
                log.info('requester: %s: verified %s to %s: in sync', self.key,
                         when(self.comparison.since + 1), when(self.comparison.until))
            self._finish(VERIFY_INTERVAL)
            return
        log.warning('requester: %s: %d day(s) differ from the primary (%s); fetching them '
                    'again', self.key, len(repairs),
                    ', '.join(when(d.start)[:10] for d in repairs[:5])
                    + (', ...' if len(repairs) > 5 else ''))
        self._fetch_next()

    def _fetch_next(self):
        difference = self.repairs[0]
        if difference.summaries_only:
            self.fetch = DaysFetch(difference.start)
        else:
            self.fetch = BucketFetch(difference.start, self.comparison.until,
                                     difference.primary)
        self._ask_records()

    def _on_page(self, page):
        fetch = self.fetch
        if fetch.add(page):
            self._ask_records()
            return
        if isinstance(fetch, DaysFetch):
            self._store_days(fetch)
            return
        if fetch.missing:
            # the primary's copy changed since its digest (or the answer is short)
            self._give_up('%s: %d records fetched, %d in the digest'
                          % (when(fetch.start)[:10], len(fetch.records), fetch.counted))
            return
        self.repairs.pop(0)
        self.fetch = None
        stored = repair_bucket(self.replica.store, self.key, fetch.start,
                               self.comparison.until, fetch.result())
        self.repaired += 1
        self.repaired_records += stored
        self.result = 'repaired'
        log.info('requester: %s: repaired %s: %d records from the primary', self.key,
                 when(fetch.start)[:10], stored)
        self._next_repair()

    def _store_days(self, fetch):
        days = fetch.result()
        difference = self.repairs.pop(0)
        self.fetch = None
        if self.replica.store.store_days(days):
            # (the summaries of days whose records were replaced count with those)
            self.repaired += bool(difference.here)
            self.result = 'repaired'
            log.info('requester: %s: repaired the daily summaries of %s from the primary',
                     self.key, when(fetch.day)[:10])
        else:
            log.debug('requester: %s: the daily summaries of %s do not fit here; left as '
                      'they are', self.key, when(fetch.day)[:10])
        self._next_repair()

    def _next_repair(self):
        if self.repairs:
            self._fetch_next()
        elif self.comparison.summaries and replaces_records(self.planned) \
                and not self.follow_up:
            # the days of the records replaced have summaries rebuilt here: compare again
            # at once, so the primary's can replace them
            self.follow_up = True
            self._finish(0)
        else:
            self.follow_up = False
            self._finish(VERIFY_INTERVAL)

    def _finish(self, again_in, complete=True):
        if complete and again_in and self.older is not None:
            # the window is done: now the slice of older history, with the same care
            (since, until), self.older = self.older, None
            summaries = self.comparison.summaries
            self._forget()
            self.comparison = Comparison(self.replica.store, since, until, summaries=summaries)
            self._guarded(self._ask_digest)
            return
        self.older = None
        self._forget()
        self.next_time = time.monotonic() + again_in
        if complete:
            self.verified = int(time.time())
        self.replica.status_changed()      # the status tells when we last verified
