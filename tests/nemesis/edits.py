"""Changes to the primary's database made by another process while its weewxd runs, as a
user's tools make them (the nemesis's process is that other process).

    import_past(station, rng, interval)   # a record imported between two records of a
                                          # past day, through WeeWX's DaySummaryManager
    correct(station, rng, value=None)     # a value of a past record changed, and that
                                          # day's summaries rebuilt from the archive, as
                                          # `weectl database rebuild-daily --date` does
    correct(station, rng, value=inf)      # the same with an inf (SQLite keeps it)

Each picks a record of a day before the newest one, within the last 6 days (the verify
window is 7) and the responder's fingerprint (the 7 whole UTC days before today), and returns
a short description naming it.
"""

import datetime
import math
import time

import weeutil.weeutil
import weedb
import weewx.accum

DAY = 86400
COLUMNS = ('outTemp', 'barometer', 'windSpeed', 'outHumidity', 'dewpoint', 'heatindex')


def _candidates(manager):
    """Records of a past day within the last 6 days before the newest record (the verify
    window) and within the 7 whole UTC days before today by the clock (what the responder's
    fingerprint covers): on a real station both are the same days; here the simulator's
    time runs behind the clock."""
    newest = manager.lastGoodStamp()
    today = weeutil.weeutil.startOfArchiveDay(newest)
    now = int(time.time())
    clock_today = now - now % DAY
    rows = manager.genSql('SELECT dateTime FROM %s WHERE dateTime > ? AND dateTime <= ? '
                          'ORDER BY dateTime' % manager.table_name,
                          (max(newest - 6 * DAY, clock_today - 7 * DAY, 0),
                           min(today, clock_today) - 1))
    return [row[0] for row in rows]


def _day(ts):
    return datetime.date.fromtimestamp(weeutil.weeutil.startOfArchiveDay(ts))


def import_past(station, rng, interval):
    """A copy of a past record, half an interval later, its outTemp 0.7 higher, added with
    DaySummaryManager.addRecord (the archive row and its day's summaries, at once)."""
    with station.open_manager() as manager:
        stamps = _candidates(manager)
        taken = set(stamps)
        free = [ts for ts in stamps if ts + interval // 2 not in taken]
        if not free:
            return 'no past record to import next to'
        ts = rng.choice(free)
        record = manager.getRecord(ts)
        record['dateTime'] = ts + interval // 2
        if record.get('outTemp') is not None:
            record['outTemp'] += 0.7
        try:
            manager.addRecord(record, log_success=False)
        except TypeError as e:
            # WeeWX's own addRecord cannot add to a day whose summaries an earlier `inf`
            # edit made NaN (SQLite keeps NULL): the primary's WeeWX, not the product
            return 'skipped: WeeWX cannot add to the day of %d (%s): %s' % (
                record['dateTime'], _text(record['dateTime']), e)
        return 'imported %d (%s)' % (record['dateTime'], _text(record['dateTime']))


def correct(station, rng, value=None):
    """One column of a past record set to value (None: 1.5 more than it was; never NULL),
    then that day's summaries rebuilt from the archive."""
    with station.open_manager() as manager:
        stamps = _candidates(manager)
        if not stamps:
            return 'no past record to correct'
        ts = rng.choice(stamps)
        column = rng.choice(COLUMNS)
        old = manager.getSql('SELECT %s FROM %s WHERE dateTime = ?'
                             % (column, manager.table_name), (ts,))[0]
        new = value if value is not None else (old if old is not None else 10.0) + 1.5
        day = _day(ts)
        accum = _summary(manager, ts, column, new)
        with weedb.Transaction(manager.connection) as cursor:     # short: weewxd writes too
            cursor.execute('UPDATE %s SET %s = ? WHERE dateTime = ?'
                           % (manager.table_name, column), (new, ts))
            manager._set_day_summary(accum, None, cursor)
        shown = new if math.isfinite(new) else repr(new)
        return '%s of %d (%s): %s -> %s, day %s rebuilt' % (column, ts, _text(ts), old,
                                                            shown, day)


def _summary(manager, ts, column, value):
    """The summary of ts's day as rebuilding it from the archive would make it once ts's
    column holds value: what backfill_day_summary does for each day (read before the
    write, so that the write transaction stays short; it is a past day, which weewxd no
    longer writes)."""
    span = weeutil.weeutil.archiveDaySpan(ts)
    accum = weewx.accum.Accum(span)
    for record in manager.genBatchRecords(span.start, span.stop):
        if record['dateTime'] == ts:
            record[column] = value
        accum.addRecord(record, weight=manager._calc_weight(record))
    return accum


def _text(ts):
    return weeutil.weeutil.timestamp_to_string(ts)
