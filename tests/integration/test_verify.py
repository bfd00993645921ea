"""Verify and repair (SPEC 5.5, 6.6): `verify [--days N | --all] [--repair]` compares the
secondary with the primary day by day through digests, and re-fetches the days that
differ."""

import json
import sqlite3
import time
import zlib

import pytest

from tests.integration.harness import DAY, KEY, START, STEP, assert_same, wait_until
from tests.integration.test_hostile import ATTACKER_TOPIC, answers, request
from tests.support.mqtt import user_properties
from tests.support.station import seed_history

from user.mqttreplicate import protocol, summaries, target

pytestmark = pytest.mark.integration

PER_DAY = DAY // STEP


def replicated(rig, broker, count, start=START):
    """A primary with count records from start, its responder, and a secondary that has
    them all (the requester stopped again)."""
    primary = rig.primary(broker, count=count, start=start)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, page_size=500)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    # its own verification (test_auto_verify.py) done, so the responder's counters stay put
    wait_until(lambda: node.replica.verifier.verified, 20, 'the requester\'s verification')
    node.stop()
    assert_same(primary, secondary)
    return primary, responder, secondary


def verify(station, *args):
    result = station.run_cli('--connect-timeout', '10', 'verify', *args, timeout=120)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result


def test_in_sync(rig, broker):
    primary, responder, secondary = replicated(rig, broker, 3 * PER_DAY)
    digests = responder.counters['digests']      # the requester's own verification's
    result = verify(secondary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'in sync' in result.stdout and 'differs' not in result.stdout
    assert verify(secondary, '--all', '--repair').returncode == 0
    assert responder.counters['digests'] == digests + 2
    assert responder.counters['rejected'] == 0
    assert_same(primary, secondary)


def test_deleted_and_altered_rows_are_reported_and_repaired(rig, broker):
    primary, responder, secondary = replicated(rig, broker, 4 * PER_DAY)
    con = sqlite3.connect(str(secondary.db_path()))
    with con:
        con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                    (START + DAY + 3600, START + DAY + 7200))
        con.execute('UPDATE archive SET outTemp = outTemp + 0.001 WHERE dateTime = ?',
                    (START + 3 * DAY + 600,))
    con.close()
    assert assert_differs(primary, secondary)

    result = verify(secondary, '--days', '10')
    assert result.returncode == 1, result.stdout + result.stderr
    differing = [line for line in result.stdout.splitlines() if 'differs' in line]
    assert len(differing) == 2, result.stdout
    assert '%d records here, %d on the primary' % (PER_DAY - 12, PER_DAY) in differing[0]
    assert_differs(primary, secondary)          # verify alone changes nothing

    repaired = verify(secondary, '--days', '10', '--repair')
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count('records)') == 2, repaired.stdout        # two days of records
    assert 'repaired the daily summaries of' in repaired.stdout, repaired.stdout
    assert_same(primary, secondary)              # archive and daily summaries
    assert verify(secondary, '--all').returncode == 0


def assert_differs(primary, secondary):
    with pytest.raises(AssertionError):
        assert_same(primary, secondary)
    return True


def test_day_imported_on_the_primary_afterwards_is_repaired(rig, broker):
    # days 0 and 1, then days 3 and 4: day 2 is imported on the primary later
    primary, responder, secondary = replicated(rig, broker, 2 * PER_DAY)
    seed_history(primary, START + 3 * DAY, 2 * PER_DAY)
    node = rig.start_requester(secondary)
    node.wait_position(START + 5 * DAY - STEP, 30)
    node.stop()
    assert_same(primary, secondary)
    seed_history(primary, START + 2 * DAY, PER_DAY)      # out of order, summaries rebuilt
    assert verify(secondary).returncode == 1
    started = time.monotonic()
    result = verify(secondary, '--repair')
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert_same(primary, secondary)


def test_hostile_digest_requests(rig, broker, caplog):
    primary = rig.primary(broker, count=2 * PER_DAY, page_size=50)
    responder = rig.start_responder(primary)
    attacker = rig.client(broker, client_id='attacker')
    attacker.subscribe(ATTACKER_TOPIC)
    good = {'since': START - 1, 'until': START + 2 * DAY, 'bucket': DAY,
            'columns': ['dateTime', 'outTemp']}
    hostile = [b'{not json', b'\xff\xfe', json.dumps(dict(good, since='0')).encode(),
               json.dumps(dict(good, since=0, until=2 ** 62)).encode(),
               json.dumps(dict(good, bucket=0)).encode(),
               json.dumps(dict(good, columns=['outTemp) FROM x; --'])).encode(),
               json.dumps(dict(good, columns={'a': 1})).encode(),
               b'[' * 100000, zlib.compress(b'{}')]
    for n, payload in enumerate(hostile):
        request(attacker, payload, correlation=b'bad-%d' % n, op='digest')
    wait_until(lambda: responder.counters['rejected'] == len(hostile), 5,
               '%d rejections' % len(hostile))
    assert not [m for m in attacker.drain(0.3)
                if (getattr(m.properties, 'CorrelationData', None) or b'').startswith(b'bad-')]

    # the responder keeps serving digests, with the same digest this side computes
    request(attacker, json.dumps(good).encode(), correlation=b'good', op='digest')
    (reply,) = answers(attacker, b'good')
    props = user_properties(reply)
    assert props['end'] == '1' and props['data_binding'] == KEY
    digest = protocol.decode_payload(reply.payload, props['encoding'])
    assert [(b[0], b[1]) for b in digest] == [(START, PER_DAY), (START + DAY, PER_DAY)]
    with primary.open_manager() as manager:
        records = list(manager.genBatchRecords(START - 1, START + 2 * DAY))
    assert digest == summaries.digest_buckets(records, good['columns'], DAY)
    assert responder.is_alive() and responder.counters['rejected'] == len(hostile)


def test_different_unit_systems_compare_timestamps(rig, broker):
    """A METRIC primary, a US secondary: converted values never match to the last bit, so
    verify compares timestamps only, and a repair converts the records it fetches."""
    primary = rig.primary(broker, count=2 * PER_DAY, units='METRIC')
    rig.start_responder(primary)
    secondary = rig.secondary(broker)
    seed_history(secondary, START, 1, units='US')           # the secondary's database is US
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.stop()
    assert secondary.count_records() == 2 * PER_DAY
    assert verify(secondary).returncode == 0
    con = sqlite3.connect(str(secondary.db_path()))
    with con:
        con.execute('DELETE FROM archive WHERE dateTime = ?', (START + DAY + 600,))
    con.close()
    assert verify(secondary).returncode == 1
    assert verify(secondary, '--repair').returncode == 0
    assert secondary.count_records() == 2 * PER_DAY
    with secondary.open_manager() as manager:
        assert manager.getRecord(START + DAY + 600)['usUnits'] == 1


def test_no_responder(rig, broker):
    secondary = rig.secondary(broker, page_timeout=2)
    seed_history(secondary, START, 10)
    result = secondary.run_cli('verify', timeout=60)
    # 4, not 3: the broker was reached; what was seen of the primary follows
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: no answer from the responder for %s within 2 s: no status of a responder "
        "for instance 'weewx' was seen" % KEY)


def test_replace_range_on_an_opened_manager(rig, broker):
    """replace_range on a manager opened elsewhere (the engine's, under weewxd): rows and
    daily summaries of the range replaced, including a range past the newest record."""
    # (replace_range rebuilds summaries here: compared with a primary whose summaries are a
    # rebuild too, without LOOP highs and lows)
    primary = rig.primary(broker, count=3 * PER_DAY, loop_hilo=False)
    secondary = rig.station('secondary')
    seed_history(secondary, START, 2 * PER_DAY - 5, loop_hilo=False)   # five records short
    con = sqlite3.connect(str(secondary.db_path()))
    with con:
        con.execute('UPDATE archive SET outTemp = -40 WHERE dateTime = ?', (START + 900,))
    con.close()
    with primary.open_manager() as source:
        wanted = [{k: v for k, v in r.items() if v is not None}
                  for r in source.genBatchRecords(START - 1, START + 3 * DAY)]
    with secondary.open_manager() as manager:
        store = target.TargetDatabase(secondary.manager_dict(), manager=manager)
        for start in (START, START + DAY, START + 2 * DAY):
            day = [store.prepare(r) for r in wanted if start <= r['dateTime'] < start + DAY]
            store.replace_range(start - 1, start + DAY - 1, day)
        store.close()
        assert manager.connection is not None                 # not closed: not ours
    assert_same(primary, secondary)


@pytest.mark.parametrize('crash', ['before the rebuild', 'during the rebuild'])
def test_a_crash_in_the_middle_of_a_repair_leaves_summaries_that_get_rebuilt(rig, broker,
                                                                              monkeypatch,
                                                                              crash):
    """The rows are replaced and the summaries of their days deleted in one transaction,
    which also marks the summaries incomplete from that day on: a crash before the rebuild
    (or in its middle) is healed the next time the database is opened, and by weewxd's own
    start-up backfill."""
    primary = rig.primary(broker, count=4 * PER_DAY, loop_hilo=False)   # (rebuilds compared)
    secondary = rig.station('secondary')
    seed_history(secondary, START, 4 * PER_DAY, loop_hilo=False)
    con = sqlite3.connect(str(secondary.db_path()))
    with con:                                   # day 1 differs, summaries included
        con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                    (START + DAY, START + DAY + 7200))
    con.close()
    with primary.open_manager() as source:
        day1 = [{k: v for k, v in r.items() if v is not None}
                for r in source.genBatchRecords(START + DAY - 1, START + 2 * DAY - 1)]
    real_write = target.write_day_summaries
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if crash == 'before the rebuild' or len(calls) > 1:
            raise KeyboardInterrupt('crash')
        return real_write(*args, **kwargs)

    monkeypatch.setattr(target, 'write_day_summaries', crashing)
    monkeypatch.setattr(target, 'TRANCHE_DAYS', 1)       # a transaction per day
    monkeypatch.setattr(target, 'WRITE_DAYS', 1)
    store = target.TargetDatabase(secondary.manager_dict())
    with pytest.raises(KeyboardInterrupt):
        store.replace_range(START + DAY - 1, START + 2 * DAY - 1,
                            [store.prepare(r) for r in day1])
    store.manager.close()
    monkeypatch.setattr(target, 'write_day_summaries', real_write)
    with pytest.raises(AssertionError):
        assert_same(primary, secondary)         # the summaries of day 1 are not there

    store = target.TargetDatabase(secondary.manager_dict())
    assert store.summaries_pending
    store.finish_bulk()                         # as a replica does before its first store
    store.close()
    assert_same(primary, secondary)
