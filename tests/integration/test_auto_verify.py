"""The requester's own verification (SPEC 5.5): after every catch-up and once a day it
compares the last verify_days with the primary through digests and fetches again, and
replaces, the days that differ, while it keeps replicating."""

import logging
import sqlite3

import pytest

from tests.integration.harness import (DAY, KEY, START, STEP, add_to_primary, assert_same,
                                       error_lines, new_record, read_for_live, wait_until)
from tests.support.station import compare_databases, seed_history

from user.mqttreplicate import protocol
from user.mqttreplicate import verify

pytestmark = pytest.mark.integration

PER_DAY = DAY // STEP


def same(primary, secondary):
    return compare_databases(primary, 'wx_binding', secondary, 'wx_binding') == []


def log_lines(caplog, text):
    return [r.getMessage() for r in caplog.records
            if r.name.startswith('user.mqttreplicate') and text in r.getMessage()]


def damage(secondary, deleted, altered):
    """Delete the rows deleted < dateTime <= deleted + 3600 and alter the row `altered`
    (the daily summaries are left as they were, as a careless edit would)."""
    con = sqlite3.connect(str(secondary.db_path()))
    with con:
        con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                    (deleted, deleted + 3600))
        con.execute('UPDATE archive SET outTemp = outTemp + 1 WHERE dateTime = ?', (altered,))
    con.close()


def test_damage_done_while_stopped_is_repaired_after_the_catchup(rig, broker, caplog):
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary = rig.primary(broker, count=4 * PER_DAY)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, page_size=500)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    wait_until(lambda: node.replica.verifier.verified, 20, 'the first verification')
    assert node.replica.verifier.repaired == 0
    assert log_lines(caplog, 'in sync')
    node.stop()
    assert_same(primary, secondary)

    damage(secondary, START + DAY + 3600, START + 3 * DAY + 600)
    assert not same(primary, secondary)
    digests = responder.counters['digests']
    node = rig.start_requester(secondary)
    wait_until(lambda: node.replica.verifier.repaired == 2 and node.replica.verifier.verified,
               30, 'the repair of two days')
    assert_same(primary, secondary)                   # archive and daily summaries
    assert responder.counters['digests'] == digests + 1
    assert len(log_lines(caplog, '2 day(s) differ from the primary')) == 1
    assert len(log_lines(caplog, 'records from the primary')) == 2
    # then the primary's summaries of the days those replacements rebuilt here
    assert log_lines(caplog, 'repaired the daily summaries of')
    assert error_lines(caplog) == []


def test_a_day_imported_on_the_primary_reaches_every_running_secondary(rig, broker, caplog,
                                                                       monkeypatch):
    """Days 0, 1, 3 and 4 replicated to two secondaries; day 2 imported on the primary
    afterwards. The daily verification brings it to both while live records keep
    arriving."""
    monkeypatch.setattr(verify, 'VERIFY_INTERVAL', 2.0)
    primary = rig.primary(broker, count=2 * PER_DAY)
    seed_history(primary, START + 3 * DAY, 2 * PER_DAY)
    responder = rig.start_responder(primary)
    secondaries = [rig.secondary(broker, name='secondary%d' % i, page_size=500)
                   for i in (1, 2)]
    nodes = [rig.start_requester(secondary) for secondary in secondaries]
    for node, secondary in zip(nodes, secondaries):
        node.wait_caught_up(30)
        node.wait_verified()
        assert_same(primary, secondary)

    seed_history(primary, START + 2 * DAY, PER_DAY)        # out of order, summaries rebuilt
    newest = START + 5 * DAY - STEP
    for ts in range(newest + STEP, newest + 4 * STEP, STEP):   # live records meanwhile
        add_to_primary(primary, [new_record(ts)])
        record, prev, days = read_for_live(primary, ts)
        responder.publish_live(responder.bindings[KEY], record, prev, days)
        newest = ts
    for node, secondary in zip(nodes, secondaries):
        wait_until(lambda: node.replica.verifier.repaired >= 1 and same(primary, secondary),
                   30, 'the imported day on %s' % secondary.name)
        node.wait_position(newest)
        assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_different_unit_systems_compare_timestamps_only(rig, broker, caplog):
    """A METRIC primary, a US secondary: converted values never match to the last bit, so the
    verification compares timestamps only, finds nothing to repair, and repairs a missing
    row with a converted record."""
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary = rig.primary(broker, count=2 * PER_DAY, units='METRIC')
    rig.start_responder(primary)
    secondary = rig.secondary(broker)
    seed_history(secondary, START, 1, units='US')            # the secondary's database is US
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    wait_until(lambda: node.replica.verifier.verified, 20, 'the first verification')
    assert node.replica.verifier.repaired == 0 and node.replica.verifier.dates_only
    node.stop()

    con = sqlite3.connect(str(secondary.db_path()))
    with con:
        con.execute('DELETE FROM archive WHERE dateTime = ?', (START + DAY + 600,))
    con.close()
    node = rig.start_requester(secondary)
    wait_until(lambda: node.replica.verifier.repaired == 1, 30, 'the repair')
    assert secondary.count_records() == 2 * PER_DAY
    with secondary.open_manager() as manager:
        assert manager.getRecord(START + DAY + 600)['usUnits'] == 1
    assert error_lines(caplog) == []


def test_verify_days_0_turns_it_off(rig, broker):
    primary = rig.primary(broker, count=PER_DAY)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, verify_days=0)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.wait_position(START + DAY - STEP)
    wait_until(lambda: node.replica.acks.last > 0, 10, 'an ack')
    node.replica.verifier.tick()          # nothing due, nothing asked
    assert responder.counters['digests'] == 0 and node.replica.verifier.verified is None


def test_unanswered_verification_is_given_up_and_tried_again(rig, broker, caplog,
                                                             monkeypatch):
    """The responder goes away after the catch-up: the verification waits page_timeout,
    says so once, and runs again RETRY_INTERVAL later, when the responder is back."""
    monkeypatch.setattr(verify, 'RETRY_INTERVAL', 3.0)
    primary = rig.primary(broker, count=PER_DAY)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, page_timeout=2)
    # as if the responder went before the verification was answered
    served = responder._serve_digest
    monkeypatch.setattr(responder, '_serve_digest', lambda request, source: None)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    wait_until(lambda: log_lines(caplog, 'no answer to the verification'), 20,
               'the verification to be given up')
    assert node.replica.verifier.verified is None
    monkeypatch.setattr(responder, '_serve_digest', served)
    wait_until(lambda: node.replica.verifier.verified, 20, 'the verification tried again')
    assert len(log_lines(caplog, 'no answer to the verification')) == 1
    assert_same(primary, secondary)


def test_a_forged_or_bad_repair_page_replaces_nothing(rig, broker, caplog, monkeypatch):
    """A repair page with a record that fails validation: the day is not replaced (a
    partial day must never replace a whole one), and the verification is tried again."""
    primary = rig.primary(broker, count=2 * PER_DAY)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    wait_until(lambda: node.replica.verifier.verified, 20, 'the first verification')
    node.stop()
    damage(secondary, START + DAY + 3600, START + DAY + 600)
    before = secondary.count_records()

    real_split = protocol.split_batches

    def corrupt(records, *args, **kwargs):
        if isinstance(records, protocol.Columns):             # the rows as read
            at = records.names.index('usUnits')
            rows = [tuple(77 if i == at else v for i, v in enumerate(row))  # not a unit
                    for row in records.rows[:1]] + records.rows[1:]         # system
            return real_split(protocol.Columns(records.names, rows), *args, **kwargs)
        records = [dict(r) for r in records]
        if records:
            records[0]['usUnits'] = 77
        return real_split(records, *args, **kwargs)

    monkeypatch.setattr(protocol, 'split_batches', corrupt)
    monkeypatch.setattr(verify, 'RETRY_INTERVAL', 3600.0)
    node = rig.start_requester(secondary)
    wait_until(lambda: log_lines(caplog, 'bad answer to the verification'), 30,
               'the bad repair page')
    assert secondary.count_records() == before and node.replica.verifier.repaired == 0
    monkeypatch.setattr(protocol, 'split_batches', real_split)
    node.replica.verifier.next_time = 0                      # the retry, now
    wait_until(lambda: node.replica.verifier.repaired == 1 and node.replica.verifier.verified,
               30, 'the repair, and the primary\'s summaries of its days')
    assert_same(primary, secondary)
    assert responder.counters['rejected'] == 0


def test_days_the_primary_has_fewer_records_of_are_left_alone(rig, broker, caplog):
    """Rows gone from the primary (a restored backup, a wrong database): the automatic
    verification must not empty its secondaries. It warns; `verify --repair` makes the day
    the primary's copy when asked to."""
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary = rig.primary(broker, count=3 * PER_DAY)
    rig.start_responder(primary)
    secondary = rig.secondary(broker)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.wait_verified()
    node.stop()
    con = sqlite3.connect(str(primary.db_path()))
    with con:
        con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                    (START + DAY + 3600, START + DAY + 7200))
    con.close()
    before = secondary.count_records()

    node = rig.start_requester(secondary)
    node.wait_verified()
    assert secondary.count_records() == before and node.replica.verifier.repaired == 0
    assert len(log_lines(caplog, 'left as it is')) == 1
    result = secondary.run_cli('--connect-timeout', '10', 'verify', '--repair', timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert secondary.count_records() == before - 12


def test_old_history_is_compared_and_repaired_a_slice_a_day(rig, broker, caplog, monkeypatch):
    """verify_days = 1, verify_cycle_days = 2, six days of history: the days before the
    window come in two slices; the day's slice holding a damaged old day is compared right
    after the window and the day repaired, summaries included."""
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary = rig.primary(broker, count=6 * PER_DAY)
    rig.start_responder(primary)
    secondary = rig.secondary(broker, page_size=1000, verify_days=1, verify_cycle_days=2)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.wait_verified()
    node.stop()
    damage(secondary, START + DAY + 3600, START + DAY + 600)
    assert not same(primary, secondary)
    # today's slice is the first: days 0 to 2 (the window is days 4 and 5)
    monkeypatch.setattr(verify, 'today', lambda: 2 * 1000)
    node = rig.start_requester(secondary)
    wait_until(lambda: node.replica.verifier.repaired == 1 and node.replica.verifier.verified,
               30, 'the repair of an old day')
    node.stop()
    assert_same(primary, secondary)
    assert log_lines(caplog, 'verified 2023-11-14 00:00 to ')


def test_an_edit_of_the_primarys_recent_past_reaches_a_connected_secondary_at_once(
        rig, broker, caplog):
    """A correction of a record of two days ago on the primary, and an import into a hole of
    three days ago, while the secondary stays connected: the responder's fingerprint of its
    last whole days changes, and the secondary verifies at once instead of at its next daily
    verification (the nemesis's seed 8: it kept the old day)."""
    import time as _time
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    today = int(_time.time()) - int(_time.time()) % DAY
    start = today - 5 * DAY
    primary = rig.primary(broker, count=5 * PER_DAY, start=start)
    con = sqlite3.connect(str(primary.db_path()))
    with con:                                       # a hole of an hour three days ago
        con.execute('DELETE FROM archive WHERE dateTime > ? AND dateTime <= ?',
                    (today - 3 * DAY + 3600, today - 3 * DAY + 7200))
    con.close()
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, page_size=2000)
    node = rig.start_requester(secondary)
    node.wait_caught_up(30)
    node.wait_verified()
    wait_until(lambda: KEY in node.requester.fingerprints, 30, "the primary's fingerprint")
    verified = node.replica.verifier.verified

    con = sqlite3.connect(str(primary.db_path()))
    with con:
        con.execute('UPDATE archive SET outTemp = outTemp + 3 WHERE dateTime = ?',
                    (today - 2 * DAY + 600,))
    con.close()
    seed_history(primary, today - 3 * DAY + 3900, 6)            # the import
    responder._queue(('fingerprint',))                  # (its minute, now)
    wait_until(lambda: node.replica.verifier.repaired >= 2
               and len(log_lines(caplog, 'in sync')) >= 2, 60,
               'the verification the changed fingerprint starts, and the one after it')
    assert node.replica.verifier.verified >= verified
    assert log_lines(caplog, "the primary's days from")
    node.stop()
    assert_same(primary, secondary)
