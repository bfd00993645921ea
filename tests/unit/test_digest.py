"""The digest of verify and repair (SPEC 5.5): one canonical form on both sides."""

import hashlib
import json

import pytest

from user.mqttreplicate import protocol as p
from user.mqttreplicate import messages
from user.mqttreplicate import summaries

DAY = 86400
T0 = 1700000000 - 1700000000 % DAY


def rec(ts, **values):
    return dict({'dateTime': ts, 'usUnits': 1, 'interval': 5}, **values)


def test_canonical_form_is_documented_json_lines():
    records = [rec(T0 + 300, outTemp=20.5), rec(T0 + 600, outTemp=None, barometer=30)]
    columns = ['dateTime', 'outTemp', 'barometer']
    expected = hashlib.sha256(
        b'[1699920300.0,20.5,null]\n[1699920600.0,null,30.0]\n').hexdigest()
    assert T0 + 300 == 1699920300
    assert summaries.digest_buckets(records, columns, DAY) == [[T0, 2, expected]]


def test_equal_whatever_the_form_of_the_same_values():
    columns = ['dateTime', 'usUnits', 'outTemp', 'rain', 'windDir']
    a = [rec(T0 + 600, outTemp=20.0, rain=0), rec(T0 + 300, outTemp=1 / 3)]
    # other order, ints for floats, None spelled out, extra columns, missing keys
    b = [rec(T0 + 300, outTemp=json.loads(json.dumps(1 / 3)), windDir=None, extra=7),
         rec(T0 + 600, outTemp=20, rain=0.0)]
    assert summaries.digest_buckets(a, columns, DAY) == summaries.digest_buckets(b, columns, DAY)


def test_any_difference_changes_the_bucket_only():
    columns = ['dateTime', 'outTemp']
    base = [rec(T0 + i * 3600, outTemp=float(i)) for i in range(48)]
    digest = summaries.digest_buckets(base, columns, DAY)
    assert [b[0] for b in digest] == [T0, T0 + DAY] and [b[1] for b in digest] == [24, 24]
    changed = [dict(r) for r in base]
    changed[30]['outTemp'] = 30.000000001
    other = summaries.digest_buckets(changed, columns, DAY)
    assert other[0] == digest[0] and other[1] != digest[1]
    assert summaries.differing_buckets(digest, other) == [T0 + DAY]
    missing = summaries.digest_buckets(base[:5] + base[6:], columns, DAY)
    assert summaries.differing_buckets(digest, missing) == [T0]
    assert summaries.differing_buckets(digest, digest[1:]) == [T0]
    assert summaries.differing_buckets(digest, digest) == []
    # a column outside the digest does not count
    assert summaries.digest_buckets(changed, ['dateTime'], DAY) == \
        summaries.digest_buckets(base, ['dateTime'], DAY)


def test_bucket_start_and_streaming():
    records = [rec(T0 + DAY - 300), rec(T0 + DAY), rec(T0 + DAY + 300)]
    digest = summaries.digest_buckets(iter(records), ['dateTime'], DAY)
    assert [(b[0], b[1]) for b in digest] == [(T0, 1), (T0 + DAY, 2)]
    assert summaries.digest_buckets([], ['dateTime'], DAY) == []


def good(**changes):
    request = {'since': T0, 'until': T0 + 7 * DAY, 'bucket': DAY,
               'columns': ['dateTime', 'outTemp']}
    request.update(changes)
    return json.dumps(request).encode()


def test_parse_digest_request():
    assert summaries.parse_digest_request(good()) == (
        T0, T0 + 7 * DAY, DAY, ['dateTime', 'outTemp'], False, False)
    assert summaries.parse_digest_request(good(infinity='null'))[5] is True


def test_an_infinity_differs_from_null_unless_the_requester_cannot_hold_one():
    """A SQLite secondary holding NULL where the primary holds inf is not in sync (the
    nemesis's 30-minute run: a correction from NULL to inf was never repaired); a MySQL
    secondary, which stores NULL for it, is (else it would be repaired every turn)."""
    records = [{'dateTime': T0 + 300, 'outTemp': float('inf')}]
    nulls = [{'dateTime': T0 + 300, 'outTemp': None}]
    columns = ['dateTime', 'outTemp']
    assert summaries.digest_buckets(records, columns, DAY) != \
        summaries.digest_buckets(nulls, columns, DAY)
    assert summaries.digest_buckets(records, columns, DAY, null_inf=True) == \
        summaries.digest_buckets(nulls, columns, DAY, null_inf=True)
    rows = [('outTemp', [(T0, float('-inf'), 3.0)])]
    nulls = [('outTemp', [(T0, None, 3.0)])]
    assert summaries.digest_days(rows, DAY) != summaries.digest_days(nulls, DAY)
    assert summaries.digest_days(rows, DAY, True) == summaries.digest_days(nulls, DAY, True)
    request = messages.DigestRequest('weewx/wx_binding', 'node', T0, T0 + DAY, DAY,
                                     ('dateTime',), True, True)
    assert b'"infinity":"null"' in request.encode().payload


@pytest.mark.parametrize('payload', [
    b'not json', b'[1, 2]', b'{}', good(since='0'), good(since=-1), good(until=T0),
    good(bucket=True), good(bucket=1), good(bucket=10 ** 12), good(since=0.5),
    good(since=0, until=T0), good(columns='dateTime'), good(columns=[]),
    good(columns=['dateTime; DROP TABLE archive']), good(columns=[1]),
    good(columns=['x'] * 1001), good(until=2 ** 70),
])
def test_parse_digest_request_rejects(payload):
    with pytest.raises(p.ProtocolError):
        summaries.parse_digest_request(payload)
