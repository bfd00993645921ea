"""The verification core both verifiers drive (verify.py: Comparison, remote_buckets,
differences, plan_repairs, Answer, BucketFetch): plain values in, checked values or a
ProtocolError out; no broker, no database, no threads."""

import pytest

from user.mqttreplicate import messages, protocol, summaries, verify

DAY = verify.BUCKET
START = 1700000000 - 1700000000 % DAY          # a bucket start
STEP = 300
KEY = 'weewx/wx_binding'
HEX = '0' * 64
US, METRIC = 0x01, 0x10


def record(ts, **values):
    return dict({'dateTime': ts, 'usUnits': US, 'interval': 5}, **values)


def day_of(start, count=DAY // STEP, **values):
    return [record(ts, **values) for ts in range(start, start + count * STEP, STEP)]


class Store:
    """What Comparison reads of a TargetDatabase: columns, unit_system(), digest()."""

    def __init__(self, records, units=US, columns=('dateTime', 'usUnits', 'interval',
                                                   'outTemp')):
        self.records = records
        self.units = units
        self.columns = list(columns)
        self.asked = []

    def unit_system(self):
        return self.units

    def digest(self, since, until, bucket, columns, days=False, null_inf=False):
        self.asked.append((since, until, bucket, list(columns)))
        return summaries.digest_buckets([r for r in self.records
                                         if since < r['dateTime'] <= until], columns, bucket)


def reply(buckets, units=US):
    return messages.DigestReply(KEY, buckets, units)


def batch(records, seq=0, end=True, more=False, last=None, rejected=()):
    return messages.Batch(KEY, records, seq, end, end and more, last if end else None,
                          rejected=tuple(rejected))


# ------------------------------------------------------------------------------------------------
# windows and buckets
# ------------------------------------------------------------------------------------------------

def test_window_covers_whole_buckets_since_exclusive():
    assert verify.window(START + 3 * DAY + 600, 3) == (START - 1, START + 3 * DAY + 600)
    assert verify.window(START + 3 * DAY, 3) == (START - 1, START + 3 * DAY)


def test_bucket_range_is_cut_at_until():
    assert verify.bucket_range(START, START + 5 * DAY) == (START - 1, START + DAY - 1)
    assert verify.bucket_range(START, START + 600) == (START - 1, START + 600)


# ------------------------------------------------------------------------------------------------
# the primary's digest: within the window asked for
# ------------------------------------------------------------------------------------------------

SINCE, UNTIL = START - 1, START + 3 * DAY - STEP      # days 0, 1 and 2


def test_digest_buckets_within_the_window_are_taken():
    entries = [[START, 288, HEX], [START + 2 * DAY, 1, HEX]]
    assert verify.remote_buckets(reply(entries), SINCE, UNTIL) == {e[0]: e for e in entries}
    assert verify.remote_buckets(reply([]), SINCE, UNTIL) == {}


def test_a_bucket_that_starts_at_until_is_within():
    until = START + 2 * DAY                      # the first second of day 2
    assert list(verify.remote_buckets(reply([[until, 1, HEX]]), SINCE, until)) == [until]


@pytest.mark.parametrize('entry, why', [
    ([START + STEP, 288, HEX], 'not a bucket start'),
    ([START - DAY, 288, HEX], 'the bucket before the window'),
    ([START - 5 * DAY, 288, HEX], 'long before the window'),
    ([START + 3 * DAY, 288, HEX], 'after until'),
    ([START + DAY, 0, HEX], 'count zero')])
def test_a_digest_bucket_outside_the_window_or_empty_is_refused(entry, why):
    with pytest.raises(protocol.ProtocolError, match='within the range asked for'):
        verify.remote_buckets(reply([[START, 288, HEX], entry]), SINCE, UNTIL)


def test_a_window_that_does_not_start_at_a_bucket_takes_the_bucket_it_starts_in():
    # since in the middle of a day: that day's bucket overlaps the range
    assert list(verify.remote_buckets(reply([[START, 3, HEX]]), START + 600, UNTIL)) == [START]
    with pytest.raises(protocol.ProtocolError):          # but not when it ends at since
        verify.remote_buckets(reply([[START, 3, HEX]]), START + DAY - 1, UNTIL)


# ------------------------------------------------------------------------------------------------
# differences and the plan of repairs
# ------------------------------------------------------------------------------------------------

def test_differences_name_each_bucket_with_both_counts():
    local = [[START, 288, 'a'], [START + DAY, 276, 'b'], [START + 2 * DAY, 288, 'c']]
    remote = {START: [START, 288, 'a'], START + DAY: [START + DAY, 288, 'x'],
              START + 3 * DAY: [START + 3 * DAY, 5, 'd']}
    assert verify.differences(local, remote) == [
        verify.Difference(START + DAY, 276, 288),
        verify.Difference(START + 2 * DAY, 288, 0),         # only here
        verify.Difference(START + 3 * DAY, 0, 5)]           # only on the primary
    assert verify.differences(local[:1], {START: [START, 288, 'a']}) == []


def test_a_bucket_with_the_same_count_but_other_values_differs():
    assert verify.differences([[START, 288, 'a']], {START: [START, 288, 'b']}) == [
        verify.Difference(START, 288, 288)]


DIFFERING = [verify.Difference(START, 276, 288),            # rows missing here
             verify.Difference(START + DAY, 288, 288),      # a row altered
             verify.Difference(START + 2 * DAY, 288, 276),  # fewer on the primary
             verify.Difference(START + 3 * DAY, 12, 0)]     # none on the primary


def test_the_careful_plan_never_replaces_a_day_by_fewer_records():
    repairs, left = verify.plan_repairs(DIFFERING, careful=True)
    assert repairs == DIFFERING[:2]
    assert left == DIFFERING[2:]


def test_the_plan_on_request_repairs_every_day():
    assert verify.plan_repairs(DIFFERING, careful=False) == (DIFFERING, [])


# ------------------------------------------------------------------------------------------------
# unit systems
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ours, theirs, differ', [
    (US, METRIC, True), (METRIC, US, True), (US, US, False),
    (US, None, False), (US, 0, False), (None, METRIC, False)])
def test_units_differ_only_when_both_are_known(ours, theirs, differ):
    assert verify.units_differ(ours, theirs) is differ


def test_a_comparison_in_the_same_units_compares_every_column():
    store = Store(day_of(START) + day_of(START + DAY))
    comparison = verify.Comparison(store, SINCE, UNTIL)
    assert comparison.columns == store.columns and not comparison.dates_only
    theirs = store.digest(SINCE, UNTIL, DAY, store.columns)
    assert comparison.take(reply(theirs)) == []
    assert store.asked[-1] == (SINCE, UNTIL, DAY, store.columns)

    altered = day_of(START) + day_of(START + DAY)
    altered[300] = dict(altered[300], outTemp=1.5)
    other = summaries.digest_buckets(altered, store.columns, DAY)
    assert comparison.take(reply(other)) == [verify.Difference(START + DAY, 288, 288)]


def test_other_units_ask_once_again_for_datetime_only():
    here = day_of(START, outTemp=50.0) + day_of(START + DAY, outTemp=50.0)
    there = day_of(START, outTemp=10.0) + day_of(START + DAY, outTemp=10.0)
    store = Store(here, units=US)
    comparison = verify.Comparison(store, SINCE, UNTIL)
    first = summaries.digest_buckets(there, comparison.columns, DAY)
    assert comparison.take(reply(first, units=METRIC)) is None        # ask again
    assert comparison.dates_only and comparison.columns == ['dateTime']
    assert store.asked == []                     # nothing read here for the first reply
    dates = summaries.digest_buckets(there, ['dateTime'], DAY)
    # the second reply is taken whatever its units say: asked once only
    assert comparison.take(reply(dates, units=METRIC)) == []
    assert store.asked == [(SINCE, UNTIL, DAY, ['dateTime'])]
    assert comparison.take(reply(summaries.digest_buckets(there[:-1], ['dateTime'], DAY),
                                 units=METRIC)) == [verify.Difference(START + DAY, 288, 287)]


def test_the_unit_check_comes_before_the_range_check():
    """A first reply in other units is asked again, not judged (its columns are not ours)."""
    comparison = verify.Comparison(Store([]), SINCE, UNTIL)
    assert comparison.take(reply([[START + STEP, 1, HEX]], units=METRIC)) is None
    with pytest.raises(protocol.ProtocolError):
        comparison.take(reply([[START + STEP, 1, HEX]], units=METRIC))


def test_unknown_units_compare_every_column():
    comparison = verify.Comparison(Store([], units=None), SINCE, UNTIL)
    assert comparison.take(reply([], units=METRIC)) == [] and not comparison.dates_only


# ------------------------------------------------------------------------------------------------
# the messages of one answer
# ------------------------------------------------------------------------------------------------

def test_a_digest_reply_is_an_answer_by_itself():
    digest = reply([[START, 1, HEX]])
    assert verify.Answer(messages.DigestReply).add(digest) == [digest]


def test_batches_in_any_order_make_one_page_once_all_are_in():
    answer = verify.Answer(messages.Batch)
    parts = [batch([record(START + 300)], 0, end=False), batch([record(START + 600)], 1,
                                                               end=False),
             batch([record(START + 900)], 2, end=True, more=True, last=START + 900)]
    assert answer.add(parts[2]) is None
    assert answer.add(parts[0]) is None
    assert answer.add(parts[0]) is None                  # a copy counts once
    assert answer.add(parts[1]) == parts


def test_a_message_after_the_last_one_is_refused():
    answer = verify.Answer(messages.Batch)
    assert answer.add(batch([], 0, end=True)) == [batch([], 0, end=True)]
    answer = verify.Answer(messages.Batch)
    assert answer.add(batch([], 0, end=False)) is None
    assert answer.add(batch([], 2, end=False)) is None
    with pytest.raises(protocol.ProtocolError, match='after its last one'):
        answer.add(batch([], 1, end=True))


def test_an_error_reply_is_a_refusal():
    with pytest.raises(verify.Refused, match='unknown binding'):
        verify.Answer(messages.Batch).add(messages.ErrorReply(KEY, 'unknown binding'))
    with pytest.raises(verify.Refused):
        verify.Answer(messages.DigestReply).add(messages.ErrorReply(KEY, 'no'))


def test_an_answer_of_the_other_kind_is_refused():
    with pytest.raises(protocol.ProtocolError, match='DigestReply where a Batch'):
        verify.Answer(messages.Batch).add(reply([]))
    with pytest.raises(protocol.ProtocolError, match='Batch where a DigestReply'):
        verify.Answer(messages.DigestReply).add(batch([]))


def test_a_protocol_1_record_never_completes_an_answer():
    answer = verify.Answer(messages.Batch)
    assert answer.add(messages.Batch(KEY, [record(START + 300)], None, version=1)) is None


# ------------------------------------------------------------------------------------------------
# the records of one bucket, page by page
# ------------------------------------------------------------------------------------------------

def test_one_page_brings_the_bucket():
    fetch = verify.BucketFetch(START, START + 5 * DAY, counted=288)
    assert (fetch.since, fetch.last) == (START - 1, START + DAY - 1)
    records = day_of(START)
    assert fetch.add([batch(records[:100], 0, end=False), batch(records[100:], 1)]) is False
    assert fetch.result() == records and fetch.missing == 0


def test_pages_follow_last():
    records = day_of(START)
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    assert fetch.add([batch(records[:100], more=True, last=records[99]['dateTime'])])
    assert fetch.since == records[99]['dateTime']
    assert fetch.add([batch(records[100:], more=False, last=records[-1]['dateTime'])]) \
        is False
    assert fetch.result() == records and fetch.missing == 0


@pytest.mark.parametrize('last', ['missing', 'same', 'backwards', 'after-the-bucket'])
def test_more_needs_a_last_that_advances_within_the_range(last):
    records = day_of(START)
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    fetch.add([batch(records[:100], more=True, last=records[99]['dateTime'])])
    since = fetch.since
    value = {'missing': None, 'same': since, 'backwards': since - STEP,
             'after-the-bucket': START + DAY}[last]
    with pytest.raises(protocol.ProtocolError, match='more=1 and last'):
        fetch.add([batch(records[100:200], more=True, last=value)])


def test_the_last_page_may_end_at_the_end_of_the_range():
    fetch = verify.BucketFetch(START, START + 600)           # the bucket cut at until
    assert fetch.add([batch([record(START), record(START + 600)], more=True,
                            last=START + 600)])
    assert fetch.since == START + 600
    assert fetch.add([batch([])]) is False                  # an empty page ends it
    assert [r['dateTime'] for r in fetch.result()] == [START, START + 600]


@pytest.mark.parametrize('ts', [START - 1, START + DAY, START - DAY])
def test_a_record_outside_the_range_is_refused(ts):
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    with pytest.raises(protocol.ProtocolError, match='outside the range'):
        fetch.add([batch([record(START), record(ts)])])


def test_a_record_outside_the_next_page_is_refused():
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    fetch.add([batch([record(START), record(START + 300)], more=True, last=START + 300)])
    with pytest.raises(protocol.ProtocolError, match='outside the range'):
        fetch.add([batch([record(START + 300)])])            # since is START + 300 now


def test_records_at_the_edges_of_the_bucket_are_within():
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    fetch.add([batch([record(START), record(START + DAY - 1)])])
    assert len(fetch.records) == 2


def test_a_page_with_a_rejected_record_is_refused_whole():
    fetch = verify.BucketFetch(START, START + 5 * DAY)
    with pytest.raises(protocol.ProtocolError, match='usUnits 77'):
        fetch.add([batch([record(START)], rejected=['usUnits 77 is not a known unit system'])])


def test_a_duplicate_counts_once():
    fetch = verify.BucketFetch(START, START + 5 * DAY, counted=2)
    fetch.add([batch([record(START), record(START + 300)], 0, end=False),
               batch([record(START + 300), record(START)], 1)])
    assert fetch.missing == 0 and [r['dateTime'] for r in fetch.result()] == [START,
                                                                              START + 300]


def test_more_records_than_the_digest_counted_are_refused():
    fetch = verify.BucketFetch(START, START + 5 * DAY, counted=2)
    with pytest.raises(protocol.ProtocolError, match='than the digest counted'):
        fetch.add([batch([record(START), record(START + 300), record(START + 600)])])


def test_fewer_records_than_counted_are_missing():
    fetch = verify.BucketFetch(START, START + 5 * DAY, counted=3)
    assert fetch.add([batch([record(START)])]) is False
    assert fetch.missing == 2
    uncounted = verify.BucketFetch(START, START + 5 * DAY)
    uncounted.add([batch([record(START)])])
    assert uncounted.missing == 0
