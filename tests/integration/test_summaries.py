"""The primary's daily summaries, copied as they are (issue 9): a secondary's archive_day_*
rows come out equal to the primary's, LOOP highs and lows included, which a rebuild from the
archive records can never give. On real SQLite stations, through a private broker.

The primary's LOOP highs and lows are simulated by altering its summaries after seeding
(loop_highs): its archive is what seed_history stored, its summaries are not what a rebuild
of that archive gives. (Stations are seeded here without seed_history's own loop_extremes,
so that a reference seeded alike is what a rebuild gives.)"""

import dataclasses
import logging
import sqlite3

import pytest

from tests.integration.harness import (BINDING, DAY, KEY, START, STEP, add_to_primary,
                                       assert_same, error_lines, new_record, publish_live,
                                       wait_until)
from tests.support.station import compare_databases, generate_records, seed_history

from user.mqttreplicate import config as cfg
from user.mqttreplicate import database
from user.mqttreplicate import verify
from user.mqttreplicate.target import TargetDatabase

pytestmark = pytest.mark.integration

PER_DAY = DAY // STEP
REBUILT = 'daily summaries are rebuilt here from the archive, not copied from the primary'


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def connect(station):
    return sqlite3.connect(str(station.db_path(BINDING)))


def loop_highs(station, first=0):
    """What LOOP packets leave in a primary's daily summaries (loop_hilo = true) from the day
    `first` on: an outTemp high and low and a wind gust that no archive record has."""
    con = connect(station)
    with con:
        con.execute('UPDATE archive_day_outTemp SET max = max + 5, maxtime = dateTime + 43210, '
                    'min = min - 3, mintime = dateTime + 3601 WHERE dateTime >= ? '
                    'AND count > 0', (first,))
        con.execute('UPDATE archive_day_wind SET max = max + 7, maxtime = dateTime + 50000 '
                    'WHERE dateTime >= ? AND count > 0', (first,))
    con.close()


def summaries(station):
    """Every archive_day_* row (the metadata table's too, but for the replicated position,
    which opening a TargetDatabase writes once) of a station: {table: rows}."""
    con = connect(station)
    try:
        tables = [row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'archive_day%' "
            "ORDER BY name")]
        return {table: [row for row in con.execute('SELECT * FROM %s ORDER BY 1' % table)
                        if row[0] != 'mqttreplicate_copied'] for table in tables}
    finally:
        con.close()


def scalar(station, sql, params=()):
    con = connect(station)
    try:
        return con.execute(sql, params).fetchone()[0]
    finally:
        con.close()


def last_update(station):
    con = connect(station)
    try:
        (value,), = con.execute("SELECT value FROM archive_day__metadata "
                                "WHERE name = 'lastUpdate'").fetchall()
        return int(value)
    finally:
        con.close()


def differences(a, b, **kwargs):
    return compare_databases(a, BINDING, b, BINDING, **kwargs)


def summary_differences_only(a, b):
    """The differences of two stations, all in the daily summaries loop_highs alters."""
    diffs = differences(a, b)
    assert diffs, 'the two are equal'
    assert all(line.startswith(('day_outTemp:', 'day_wind:')) for line in diffs), diffs
    return diffs


def read_days(station, first, stop, through=None):
    """The DayRows of a station's days first <= dateTime < stop, as its responder reads them."""
    with station.open_manager(BINDING) as manager:
        return database.read_days(manager, first, stop, through)


def live_days(station, ts):
    """The daily summaries a primary's responder publishes with its live record ts
    (MQTTResponder._days_of)."""
    return read_days(station, database.day_start(ts), database.day_stop(ts), ts)


def target(station):
    return TargetDatabase(station.manager_dict(BINDING))


def log_lines(caplog, text, level=logging.INFO):
    return [r.getMessage() for r in caplog.records
            if r.name.startswith('user.mqttreplicate') and r.levelno >= level
            and text in r.getMessage()]


# ------------------------------------------------------------------------------------------------
# TargetDatabase.store_days on real databases
# ------------------------------------------------------------------------------------------------

LOOP_FROM = START + DAY          # the primary fixture's days with LOOP highs


@pytest.fixture
def primary(rig):
    """Four days (START to START + 4 days - STEP), with LOOP highs in its summaries from
    day 1 on (its day 0 and the day before, of its first record, as rebuilt)."""
    station = rig.station('primary')
    seed_history(station, START, 4 * PER_DAY, loop_hilo=False)
    loop_highs(station, LOOP_FROM)
    return station


def test_stored_as_they_are_after_a_bulk_store(rig, primary):
    """The catch-up's way: the records of some days stored in bulk (no summaries built), then
    the primary's summaries of those days stored as they are: equal to the primary's, and
    complete up to the newest record."""
    secondary = rig.station('secondary')
    seed_history(secondary, START, 2 * PER_DAY, loop_hilo=False)   # summaries complete to there
    complete = START + 2 * DAY - STEP
    assert last_update(secondary) == complete
    store = target(secondary)
    try:
        store.store_bulk(store.prepare_bulk(generate_records(START + 2 * DAY, 2 * PER_DAY)))
        assert store.summaries_pending and last_update(secondary) == complete
        # from the day the last record here belongs to (its midnight record is the next
        # day's first: START + 2 days belongs to the day of START + 1 day)
        days = read_days(primary, START + DAY, START + 4 * DAY)
        assert store.days_mismatch(days) is None
        assert store.store_days(days) is True
        assert store.copies_days is True and not store.summaries_pending
        assert store.summaries_complete() == START + 4 * DAY - STEP
    finally:
        store.close()
    assert last_update(secondary) == START + 4 * DAY - STEP
    assert_same(primary, secondary)                      # archive and every summary row
    # which a rebuild from the archive would not give
    reference = rig.station('reference')
    seed_history(reference, START, 4 * PER_DAY, loop_hilo=False)
    summary_differences_only(primary, reference)


def test_a_live_records_day_stored_as_it_is(rig):
    """A live record's day (through = its dateTime) over the one the engine updated."""
    ts = START + 2 * DAY + 100 * STEP
    primary = rig.station('primary')
    seed_history(primary, START, 0, records=generate_records(START, (ts - START) // STEP + 1),
                 loop_hilo=False)
    loop_highs(primary, START + 2 * DAY)
    secondary = rig.station('secondary')
    seed_history(secondary, START, (ts - START) // STEP + 1, loop_hilo=False)
    summary_differences_only(primary, secondary)
    store = target(secondary)
    try:
        assert store.store_days(live_days(primary, ts)) is True
    finally:
        store.close()
    assert_same(primary, secondary)
    assert last_update(secondary) == ts


def bulk_without_summaries(secondary, start, count):
    """Archive rows stored in bulk, their summaries not built yet (a catch-up's page before
    its summaries)."""
    store = target(secondary)
    try:
        store.store_bulk(store.prepare_bulk(generate_records(start, count)))
    finally:
        store.close()                    # (closing does not build them)


REFUSALS = {
    # case: what days_mismatch() says (None: they fit, but not what is here)
    'units': 'the unit systems differ (primary US, here METRIC)',
    'version': 'the daily summaries are of version 3.0 on the primary, 4.0 here',
    'a type missing': 'the observation types differ (only on the primary: none; only here: '
                      'outTemp)',
    'a type more': 'the observation types differ (only on the primary: cloudbase2; only here: '
                   'none)',
    'columns': 'the columns of archive_day_outTemp differ',
    'another time zone': "the primary's days start at other times than here (another time "
                         "zone)",
    'incomplete before': None,
    'newer records of a live day': None,
}


@pytest.mark.parametrize('case', list(REFUSALS))
def test_refused_summaries_leave_the_secondarys_untouched(rig, primary, case):
    units = 'METRIC' if case == 'units' else 'US'
    secondary = rig.station('secondary', units=units)
    days = read_days(primary, START + DAY, START + 4 * DAY)
    if case == 'incomplete before':
        # days 0 and 1 summarised, day 2's records in bulk without summaries yet: the days
        # from day 3 on cannot be stored over a hole
        seed_history(secondary, START, 2 * PER_DAY, loop_hilo=False)
        bulk_without_summaries(secondary, START + 2 * DAY, PER_DAY)
        days = read_days(primary, START + 3 * DAY, START + 4 * DAY)
    elif case == 'newer records of a live day':
        # a live record's day as the primary had it then, arriving late: the secondary has
        # newer records of that day
        seed_history(secondary, START, 4 * PER_DAY, loop_hilo=False)
        days = live_days(primary, START + 3 * DAY + 600)
        assert days.through == START + 3 * DAY + 600
    else:
        seed_history(secondary, START, 4 * PER_DAY, loop_hilo=False)
    if case == 'version':
        days = dataclasses.replace(days, version='3.0')
    elif case == 'a type missing':
        days = dataclasses.replace(days, tables={k: v for k, v in days.tables.items()
                                                 if k != 'outTemp'})
    elif case == 'a type more':
        days = dataclasses.replace(days, tables=dict(days.tables,
                                                     cloudbase2=days.tables['cloudbase']))
    elif case == 'another time zone':
        # a primary whose midnights are an hour after this station's
        days = dataclasses.replace(days, first=days.first + 3600, stop=days.stop + 3600,
                                   tables={name: (columns, [(row[0] + 3600,) + row[1:]
                                                            for row in rows])
                                           for name, (columns, rows) in days.tables.items()})
    elif case == 'columns':
        columns, rows = days.tables['outTemp']
        days = dataclasses.replace(days, tables=dict(
            days.tables, outTemp=(columns[:-1], [row[:-1] for row in rows])))
    before = summaries(secondary)
    store = target(secondary)
    try:
        assert store.days_mismatch(days) == REFUSALS[case]
        assert store.store_days(days) is False
        assert store.copies_days is (REFUSALS[case] is None)
    finally:
        store.close()
    assert summaries(secondary) == before                # lastUpdate included


def test_store_days_of_nothing_new_changes_nothing(rig, primary):
    """Summaries equal to the secondary's own: stored, and nothing differs."""
    secondary = rig.station('secondary')
    seed_history(secondary, START, 4 * PER_DAY, loop_hilo=False)
    loop_highs(secondary, LOOP_FROM)
    before = summaries(secondary)
    store = target(secondary)
    try:
        assert store.store_days(read_days(primary, START, START + 4 * DAY)) is True
    finally:
        store.close()
    assert summaries(secondary) == before
    assert_same(primary, secondary)


def test_replace_range_rebuilds_and_the_primarys_summaries_then_fit(rig, primary):
    """A repair's replace_range rebuilds the summaries of the days it touches from the
    archive here (those days hold records outside the range, which may not be the
    primary's); once the records are the primary's, its summaries of a day fit and are
    stored as they are."""
    secondary = rig.station('secondary')
    seed_history(secondary, START, 4 * PER_DAY, loop_hilo=False)
    with primary.open_manager() as source:
        day1 = [{k: v for k, v in r.items() if v is not None}
                for r in source.genBatchRecords(START + DAY - 1, START + 2 * DAY - 1)]
    store = target(secondary)
    try:
        store.replace_range(START + DAY - 1, START + 2 * DAY - 1,
                            [store.prepare(r) for r in day1])
        rebuilt = scalar(secondary, 'SELECT max FROM archive_day_outTemp WHERE dateTime = ?',
                         (START + DAY,))
        assert store.store_days(read_days(primary, START + DAY, START + 2 * DAY)) is True
    finally:
        store.close()
    assert scalar(primary, 'SELECT max FROM archive_day_outTemp WHERE dateTime = ?',
                  (START + DAY,)) == rebuilt + 5
    diffs = differences(primary, secondary)
    # day 1 is the primary's; days 2 and 3 are still the secondary's own
    assert diffs and not any('(2023-11-15' in line for line in diffs), diffs
    assert all(line.startswith(('day_outTemp:', 'day_wind:')) for line in diffs), diffs


# ------------------------------------------------------------------------------------------------
# a catch-up and live records through a real broker
# ------------------------------------------------------------------------------------------------

def test_catchup_copies_the_primarys_summaries(rig, broker, caplog):
    """Four days in pages of 200 (a day ends in the middle of most pages), then live records
    whose day the primary's LOOP packets changed too: every archive_day_* row is the
    primary's, where a rebuild would differ. The verification, which compares summaries
    now, finds nothing to repair."""
    primary = rig.primary(broker, loop_hilo=False, count=4 * PER_DAY, batch_size=100)
    loop_highs(primary)
    reference = rig.station('reference')                 # a rebuild of the same archive
    seed_history(reference, START, 4 * PER_DAY, loop_hilo=False)
    summary_differences_only(primary, reference)
    secondary = rig.secondary(broker, page_size=200)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    assert_same(primary, secondary)
    assert node.replica.sink.summaries == 'copied'
    assert node.replica.store.copies_days is True

    ts = START + 4 * DAY - STEP
    for _ in range(3):
        ts += STEP
        add_to_primary(primary, [new_record(ts)])
        loop_highs(primary, database.day_start(ts))      # the day's LOOP highs move on
        publish_live(responder, primary, ts, add=False)
    node.wait_position(ts)
    node.wait_verified()
    assert_same(primary, secondary)
    assert node.replica.verifier.repaired == 0
    assert log_lines(caplog, 'in sync')
    assert not log_lines(caplog, REBUILT)
    assert error_lines(caplog, logging.WARNING) == []


def test_a_secondary_with_the_first_days_gets_the_rest_verbatim(rig, broker, caplog):
    """A secondary that has the first two days (its own summaries of them, rebuilt): the
    catch-up's first page brings the summaries from the day of its newest record on."""
    primary = rig.primary(broker, loop_hilo=False, count=4 * PER_DAY)
    loop_highs(primary, START + 2 * DAY)
    secondary = rig.secondary(broker, page_size=500)
    seed_history(secondary, START, 2 * PER_DAY + 7, loop_hilo=False)       # into day 2
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog, logging.WARNING) == []


# ------------------------------------------------------------------------------------------------
# verification: a day whose summaries only differ is repaired
# ------------------------------------------------------------------------------------------------

def alter_summaries(station, day):
    """A careless edit of one day's summaries (the archive left alone)."""
    con = connect(station)
    with con:
        con.execute('UPDATE archive_day_outTemp SET max = max + 1, sum = sum + 2 '
                    'WHERE dateTime = ?', (day,))
        con.execute('UPDATE archive_day_barometer SET min = min - 0.01 WHERE dateTime = ?',
                    (day,))
    con.close()


def replicated(rig, broker, caplog, **primary_options):
    """A primary with LOOP highs, replicated to a secondary (its verification done and the
    requester stopped again)."""
    primary = rig.primary(broker, loop_hilo=False, count=4 * PER_DAY, **primary_options)
    loop_highs(primary)
    responder = rig.start_responder(primary)
    secondary = rig.secondary(broker, page_size=500)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    node.wait_verified()
    node.stop()
    assert_same(primary, secondary)
    caplog.clear()
    return primary, responder, secondary


def test_the_requesters_verification_repairs_a_day_of_summaries(rig, broker, caplog):
    primary, responder, secondary = replicated(rig, broker, caplog)
    alter_summaries(secondary, START + DAY)
    diffs = differences(primary, secondary)
    assert diffs and all('2023-11-15' in line for line in diffs), diffs
    assert secondary.count_records() == primary.count_records()
    node = rig.start_requester(secondary)
    wait_until(lambda: node.replica.verifier.repaired == 1 and node.replica.verifier.verified,
               20, 'the repair of the summaries of a day')
    assert_same(primary, secondary)
    assert len(log_lines(caplog, '1 day(s) differ from the primary (2023-11-15)')) == 1
    assert log_lines(caplog, 'repaired the daily summaries of 2023-11-15 from the primary')
    assert not log_lines(caplog, 'records from the primary')    # the records were the same
    # verified again: nothing left to repair
    assert not log_lines(caplog, 'in sync')
    node.replica.verifier.next_time = 0
    wait_until(lambda: log_lines(caplog, 'in sync'), 20, 'the next verification')
    assert node.replica.verifier.repaired == 1
    assert error_lines(caplog) == []


def test_a_repair_leaves_the_summaries_of_a_day_left_alone_as_they_were(rig, broker, caplog):
    """Day 1 has fewer records on the primary (left as it is: the careful plan), day 2's
    summaries differ: repairing day 2 must not put the primary's summaries of day 1 over a
    day 1 whose records are still this station's own."""
    primary, responder, secondary = replicated(rig, broker, caplog)
    source = target(primary)                  # 12 records of day 1 gone, summaries rebuilt
    try:
        with primary.open_manager() as manager:
            kept = [{k: v for k, v in r.items() if v is not None}
                    for r in manager.genBatchRecords(START + DAY - 1, START + 2 * DAY - 1)
                    if not START + DAY + 3600 < r['dateTime'] <= START + DAY + 7200]
        source.replace_range(START + DAY - 1, START + 2 * DAY - 1,
                             [source.prepare(r) for r in kept])
    finally:
        source.close()
    alter_summaries(secondary, START + 2 * DAY)
    before = summaries(secondary)
    node = rig.start_requester(secondary)
    # (day 0 too: the primary's replace_range rebuilt it, as the midnight record that starts
    # day 1's bucket is day 0's last, and lost its LOOP highs)
    wait_until(lambda: node.replica.verifier.repaired == 2 and node.replica.verifier.verified,
               20, 'the repair of days 0 and 2')
    node.stop()
    assert len(log_lines(caplog, 'left as it is', logging.WARNING)) == 1
    after = summaries(secondary)
    for table in ('archive_day_outTemp', 'archive_day_barometer', 'archive_day_wind'):
        day1 = [[row for row in rows[table] if row[0] == START + DAY] for rows in (before,
                                                                                   after)]
        assert day1[0] == day1[1], table
    # what still differs is day 1 (its records, and so its summaries), nothing else
    diffs = differences(primary, secondary, max_diffs=100000)
    assert diffs and all('2023-11-15' in line or line.startswith('archive: %d rows in A'
                                                                 % (4 * PER_DAY - 12))
                         for line in diffs), diffs


def run_verify(station, *args):
    result = station.run_cli('--connect-timeout', '10', 'verify', *args, timeout=60)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result


def test_verify_repair_repairs_a_day_of_summaries(rig, broker, caplog):
    primary, responder, secondary = replicated(rig, broker, caplog)
    alter_summaries(secondary, START + 2 * DAY)
    found = run_verify(secondary, '--days', '10')
    assert found.returncode == 1, found.stdout
    differing = [line for line in found.stdout.splitlines() if 'differs' in line]
    assert differing == ['%s: 2023-11-16 00:00 differs: daily summaries differ (%d records '
                         'on both sides)' % (KEY, PER_DAY)], found.stdout
    diffs = differences(primary, secondary)              # verify alone changes nothing
    assert diffs and all('2023-11-16' in line for line in diffs), diffs

    repaired = run_verify(secondary, '--days', '10', '--repair')
    assert repaired.returncode == 0, repaired.stdout
    assert repaired.stdout.count('repaired') == 1, repaired.stdout
    assert 'still differs' not in repaired.stdout and 'rebuilt here' not in repaired.stdout
    assert_same(primary, secondary)
    again = run_verify(secondary, '--all')
    assert again.returncode == 0 and 'in sync' in again.stdout, again.stdout


def test_verify_in_process_repairs_summaries_and_records(rig, broker, caplog):
    """The Verifier itself: one day whose summaries only differ, one whose records differ;
    both repaired, the summaries as the primary has them (a rebuild would lose its LOOP
    highs)."""
    primary, responder, secondary = replicated(rig, broker, caplog)
    alter_summaries(secondary, START + DAY)
    con = connect(secondary)
    with con:
        con.execute('UPDATE archive SET outTemp = outTemp + 0.5 WHERE dateTime = ?',
                    (START + 2 * DAY + 600,))
    con.close()
    config_dict = secondary.config_dict()
    lines = []
    verifier = verify.Verifier(cfg.parse_requester(config_dict), config_dict, timeout=10,
                               out=lines.append)
    assert verifier.run(10, repair=True) is True, lines
    assert [line for line in lines if 'differs' in line] == [
        '%s: 2023-11-15 00:00 differs: daily summaries differ (%d records on both sides)'
        % (KEY, PER_DAY),
        '%s: 2023-11-16 00:00 differs: %d records here, %d on the primary'
        % (KEY, PER_DAY, PER_DAY)], lines
    # the day of records (which rebuilt the summaries of its days: its own, and the day
    # before, whose last record, at midnight, is in it), then the primary's summaries of
    # those days (the day of summaries among them), the records being the primary's now
    assert [line for line in lines if 'repaired' in line] == [
        '%s: repaired 2023-11-16 00:00 (%d records)' % (KEY, PER_DAY),
        '%s: repaired the daily summaries of 2023-11-15' % KEY,
        '%s: repaired the daily summaries of 2023-11-16' % KEY], lines
    assert_same(primary, secondary)


# ------------------------------------------------------------------------------------------------
# where the primary's summaries cannot be stored as they are
# ------------------------------------------------------------------------------------------------

def test_a_secondary_in_other_units_rebuilds_and_verifies_without_looping(rig, broker, caplog,
                                                                          monkeypatch):
    """A METRIC primary, a US secondary: the primary's summaries are in the wrong units, so
    the secondary builds its own from the converted archive, says so once (catch-up and live
    records alike), and its verifications (the requester's, repeated, and `verify`) find
    nothing to repair."""
    monkeypatch.setattr(verify, 'VERIFY_INTERVAL', 1.0)
    count = 3 * PER_DAY
    primary = rig.primary(broker, loop_hilo=False, count=count, units='METRIC', batch_size=100)
    loop_highs(primary)
    secondary = rig.secondary(broker, page_size=200)       # a US station
    seed_history(secondary, START, 1, units='US', loop_hilo=False)          # its database is US
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    ts = START + (count - 1) * STEP
    for _ in range(2):
        ts += STEP
        add_to_primary(primary, [new_record(ts, units='METRIC')])
        publish_live(responder, primary, ts, add=False)
    node.wait_position(ts)
    node.wait_verified()
    first = node.replica.verifier.verified
    wait_until(lambda: (node.replica.verifier.verified or 0) > first, 20,
               'a second verification')
    assert node.replica.verifier.repaired == 0 and node.replica.verifier.dates_only
    assert node.replica.sink.summaries == 'rebuilt'
    assert node.replica.store.copies_days is False
    assert node.replica.sink.wants_days is False
    rebuilt = log_lines(caplog, REBUILT)
    assert rebuilt == ['requester: %s: %s: the unit systems differ (primary METRIC, here US)'
                       % (KEY, REBUILT)], rebuilt
    assert not log_lines(caplog, 'differ from the primary')
    node.stop()

    # the summaries are the secondary's own, of its converted archive
    reference = rig.station('reference')
    seed_history(reference, START, (ts - START) // STEP + 1, units='US', loop_hilo=False)
    assert_same(reference, secondary, rel_tol=1e-5, abs_tol=1e-6)
    result = run_verify(secondary, '--days', '10')
    assert result.returncode == 0 and 'differs' not in result.stdout, result.stdout
    assert error_lines(caplog) == []


def fewer_types(rig, broker, caplog):
    """A primary, and a secondary whose schema has fewer observation types (the older wview
    schema) caught up with it (the requester stopped again)."""
    primary = rig.primary(broker, loop_hilo=False, count=2 * PER_DAY)
    loop_highs(primary)
    secondary = rig.secondary(broker, page_size=200)
    secondary.edit(lambda c: c['DataBindings'][BINDING].__setitem__(
        'schema', 'weewx.schemas.wview.schema'))
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    node.wait_verified()
    assert node.replica.verifier.repaired == 0
    assert node.replica.sink.summaries == 'rebuilt'
    rebuilt = log_lines(caplog, REBUILT)
    assert len(rebuilt) == 1 and 'the observation types differ' in rebuilt[0], rebuilt
    node.stop()
    assert secondary.count_records() == 2 * PER_DAY
    return primary, secondary


def test_a_secondary_with_other_observation_types_rebuilds(rig, broker, caplog):
    """The primary's summaries cannot be stored there, so it rebuilds its own, says so once,
    and its own verification does not compare summaries (they cannot be the primary's)."""
    primary, secondary = fewer_types(rig, broker, caplog)
    reference = rig.station('reference')                 # the same schema, the same records
    reference.edit(lambda c: c['DataBindings'][BINDING].__setitem__(
        'schema', 'weewx.schemas.wview.schema'))
    seed_history(reference, START, 2 * PER_DAY, loop_hilo=False)
    assert_same(reference, secondary)


def test_verify_on_a_secondary_with_other_observation_types_finds_it_in_sync(rig, broker,
                                                                           caplog):
    primary, secondary = fewer_types(rig, broker, caplog)
    result = run_verify(secondary, '--days', '10')
    assert result.returncode == 0 and 'differs' not in result.stdout, result.stdout
