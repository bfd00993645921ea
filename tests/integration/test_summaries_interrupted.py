"""The primary's daily summaries survive an interrupted catch-up (issue 19, item 3).

A catch-up page stores its records in batches and the primary's summaries of its days at
its end. Cut in between, the records are here and their days' summaries are not; whatever
happens next (a clean stop builds them from the archive, weewxd's start-up backfill does,
kill -9 leaves them unbuilt), the next catch-up must bring the primary's summaries of those
days, or their LOOP highs and lows are lost for good. Each case leaves the secondary as the
cut would, then catches up and compares every archive and archive_day_* row.

Archive intervals of 5 and 30 minutes: at 30 minutes a page of 5,000 records spans 104
days, so the days to bring again reach far behind the page's since."""

import pytest
from tests.integration.harness import (BINDING, START, assert_same, configure, error_lines,
                                       wait_until)
from tests.integration.test_summaries import loop_highs, target
from tests.support.station import seed_history

from user.mqttreplicate import database

pytestmark = pytest.mark.integration


def primary_records(primary, count):
    """The primary's first count records, as its database holds them."""
    with primary.open_manager(BINDING) as manager:
        records = []
        for record in manager.genBatchRecords(START - 1):
            records.append({k: v for k, v in record.items() if v is not None})
            if len(records) == count:
                return records
    return records


def cut_page(secondary, records, after):
    """What a catch-up page cut after its batch `records` leaves, then `after`: 'kill -9'
    (summaries not built), 'clean stop' (built by finish_bulk, as Sink.close does),
    'weewxd start' (built by WeeWX's own backfill at weewxd's start)."""
    store = target(secondary)
    try:
        store.store_bulk(store.prepare_bulk(records))
        if after == 'clean stop':
            store.finish_bulk()
    finally:
        store.close()
    if after == 'weewxd start':
        with secondary.open_manager(BINDING) as manager:
            manager.backfill_day_summary(progress_fn=None)


@pytest.mark.parametrize('after', ['kill -9', 'clean stop', 'weewxd start'])
@pytest.mark.parametrize('minutes,count,cut', [(5, 2500, 1700), (30, 7000, 3000)],
                         ids=['5min', '30min'])
def test_the_next_catchup_brings_the_summaries_of_a_cut_page(rig, broker, caplog, after,
                                                             minutes, count, cut):
    primary = rig.station('primary')
    seed_history(primary, START, count, interval_minutes=minutes)
    loop_highs(primary)                     # every day's summaries differ from a rebuild
    primary = configure(primary, broker, 'Responder', clientid='primary-cut')
    secondary = rig.secondary(broker, page_size=5000)
    cut_page(secondary, primary_records(primary, cut), after)
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(60)
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_copied_position_moves_only_with_the_primarys_summaries(rig):
    """TargetDatabase.copied(): 0 on a new database, moved on by the primary's summaries of
    days that follow it, back by a rebuild of older days, and never by a rebuild after it."""
    primary = rig.station('primary')
    seed_history(primary, START, 4 * 288)
    secondary = rig.station('secondary')
    store = target(secondary)
    try:
        assert store.copied() == 0
        records = primary_records(primary, 4 * 288)
        day = database.day_stop(START + 1) - database.day_start(START + 1)
        first_day = database.day_start(START)
        with primary.open_manager(BINDING) as manager:
            days = database.read_days(manager, first_day, first_day + 2 * day)
        prepared = store.prepare_bulk(records[:2 * 288])
        store.store_bulk(prepared, days)
        assert store.copied() == min(records[2 * 288 - 1]['dateTime'], first_day + 2 * day)
        copied = store.copied()
        store.store_bulk(store.prepare_bulk(records[2 * 288:]))
        store.finish_bulk()                     # days 2 and 3 rebuilt here
        assert store.copied() == copied
        assert store.days_wanted(records[-1]['dateTime']) == copied
        store.rebuild_days(START + day, START + day)    # day 1 rebuilt here
        assert store.copied() <= database.day_start(START + day)
    finally:
        store.close()


@pytest.mark.parametrize('how', ['verify --repair', 'requester'])
def test_a_repair_of_the_windows_first_day_keeps_the_primarys_summaries_of_the_day_before(
        rig, broker, caplog, how):
    """Issue 19, defect 3: replacing the records of the first bucket of the verification's
    window rebuilds the summaries of the local day its first record belongs to, which
    started the day before, outside the window: its LOOP highs and lows were lost for good
    (the comparison after the repair never looks there). Now the repair fetches the
    primary's summaries of every day it rebuilt."""
    from tests.integration.test_summaries import connect, replicated
    from user.mqttreplicate import config as cfg
    from user.mqttreplicate import verify
    primary, responder, secondary = replicated(rig, broker, caplog)
    newest = secondary.last_timestamp()
    since, _ = verify.window(newest, 1)            # verify_days = 1: a window of two days
    first_bucket = since + 1
    con = connect(secondary)
    with con:
        con.execute('UPDATE archive SET outTemp = outTemp + 0.5 WHERE dateTime = ?',
                    (first_bucket + 7200,))
    con.close()
    if how == 'verify --repair':
        config_dict = secondary.config_dict()
        lines = []
        verifier = verify.Verifier(cfg.parse_requester(config_dict), config_dict, timeout=10,
                                   out=lines.append)
        assert verifier.run(1, repair=True) is True, lines
    else:
        secondary.edit(lambda c: c['Replicator']['Requester'].__setitem__('verify_days', '1'))
        node = rig.start_requester(secondary)
        node.wait_verified()
        wait_until(lambda: node.replica.verifier.repaired >= 1
                   and node.replica.verifier.correlation is None, 30, 'the repair')
        node.stop()
    assert_same(primary, secondary)
