"""Database access for both roles, through weewx's managers and weedb only.

A WeeWX database connection may be used only by the thread that opened it (WEEWX-NOTES §3.6):
every object here is opened, used and closed by one thread. Reads on the primary are short
statements, fully fetched, so the primary's own writes never wait for us.
"""

import datetime
import logging
import os
import time

import weedb
import weeutil.weeutil
import weewx
import weewx.accum
import weewx.manager
import weewx.units

from . import protocol
from .faults import is_termination

log = logging.getLogger(__name__)


def manager_dict(config_dict, binding):
    """The manager dictionary of a binding; raises ConfigError-worthy KeyError text."""
    try:
        return weewx.manager.get_manager_dict_from_config(config_dict, binding)
    except Exception as e:
        raise LookupError("data binding '%s' is not usable: %s: %s"
                          % (binding, type(e).__name__, e))


def _fetch_all(connection, sql, args=()):
    cursor = connection.cursor()
    try:
        cursor.execute(sql, args)
        fetchall = getattr(cursor, 'fetchall', None)     # weedb's MySQL cursor has none
        return fetchall() if fetchall is not None else list(iter(cursor.fetchone, None))
    finally:
        cursor.close()


def _read_page(connection, select, columns, since, until, limit):
    sql = select + ' WHERE dateTime > ?'
    args = [since]
    if until is not None:
        sql += ' AND dateTime <= ?'
        args.append(until)
    sql += ' ORDER BY dateTime ASC LIMIT %d' % int(limit)
    rows = _fetch_all(connection, sql, args)
    return [{k: v for k, v in zip(columns, row) if v is not None} for row in rows]


DIGEST_PAGE = 2000      # records read at once for a digest: memory stays bounded


def digest_range(read_page, since, until, bucket, columns):
    """protocol.digest_buckets of the records since < dateTime <= until, read in short,
    fully fetched pages."""
    def records():
        last = since
        while True:
            page = read_page(last, until, DIGEST_PAGE)
            yield from page
            if len(page) < DIGEST_PAGE:
                return
            last = page[-1]['dateTime']
    return protocol.digest_buckets(records(), columns, bucket)


def archive_date(ts):
    """The local archive day a record belongs to (a record at midnight ends the day before),
    as WeeWX's daily summaries count days."""
    return datetime.date.fromtimestamp(weeutil.weeutil.startOfArchiveDay(ts))


class SourceDatabase:
    """The primary's side of one binding: short, fully fetched reads."""

    def __init__(self, mgr_dict):
        self.manager = weewx.manager.open_manager(mgr_dict, initialize=False)
        self.table = self.manager.table_name
        self.columns = list(self.manager.sqlkeys)
        self.select = 'SELECT %s FROM %s' % (', '.join(self.columns), self.table)

    def close(self):
        """Close the connection; one that already failed may fail again here: never raises."""
        try:
            self.manager.close()
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('closing %s: %s: %s', self.table, type(e).__name__, e)

    def newest(self):
        return self.manager.lastGoodStamp()

    def read_page(self, since, until, limit):
        """Up to `limit` records with since < dateTime <= until, oldest first, None values
        left out."""
        return _read_page(self.manager.connection, self.select, self.columns, since, until,
                          limit)

    def digest(self, since, until, bucket, columns):
        return digest_range(self.read_page, since, until, bucket, columns)

    def unit_system(self):
        row = _fetch_all(self.manager.connection, 'SELECT usUnits FROM %s LIMIT 1' % self.table)
        return row[0][0] if row else None

    def previous(self, timestamp):
        """dateTime of the newest record older than timestamp, or 0."""
        return previous_timestamp(self.manager, timestamp)

    def record_near(self, timestamp, delta):
        record = self.manager.getRecord(timestamp, max_delta=delta)
        return {k: v for k, v in record.items() if v is not None} if record else None


def engine_units(config_dict):
    """The unit system weewxd would store in an empty database: [StdConvert] target_unit if
    StdConvert runs, else None (the first record decides)."""
    services = config_dict.get('Engine', {}).get('Services', {})
    if 'weewx.engine.StdConvert' not in str(services.get('process_services', '')):
        return None
    target = config_dict.get('StdConvert', {}).get('target_unit', 'US')
    return weewx.units.unit_constants.get(str(target).upper())


def previous_timestamp(manager, timestamp):
    """dateTime of the newest record older than timestamp in a manager's table, or 0."""
    row = manager.getSql('SELECT MAX(dateTime) FROM %s WHERE dateTime < ?' % manager.table_name,
                         (timestamp,))
    return (row[0] or 0) if row else 0


class TargetDatabase:
    """The secondary's side of one binding: stores records, in bulk or one by one.

    Bulk stores insert archive rows only; the daily summaries are rebuilt for the new range
    by finish_bulk() (as `weectl database transfer` does), which also runs before any single
    record is stored so the summaries never miss a row."""

    def __init__(self, mgr_dict, initialize=True, preferred_units=None, manager=None):
        """manager: an already opened manager to use (the engine's, on its thread)."""
        self.owned = manager is None
        if manager is None:
            root = mgr_dict['database_dict'].get('SQLITE_ROOT')
            if initialize and root:
                # the engine thread may be creating it at the same moment
                os.makedirs(root, exist_ok=True)
            manager = weewx.manager.open_manager(mgr_dict, initialize=initialize)
        self.manager = manager
        self.name = getattr(manager, 'database_name', '?')
        self.table = manager.table_name
        self.columns = list(manager.sqlkeys)
        self.column_set = frozenset(self.columns)
        self.preferred_units = preferred_units
        self.summaries_pending = False
        self.dropped_warned = set()
        self.has_summaries = hasattr(manager, 'backfill_day_summary')
        if self.has_summaries:
            # A bulk store whose summaries were never rebuilt (a crash in between)?
            last_update = weeutil.weeutil.to_int(manager._read_metadata('lastUpdate'))
            newest = manager.lastGoodStamp()
            self.summaries_pending = bool(newest and (last_update or 0) < newest)

    def close(self):
        if self.owned:
            self.manager.close()

    def newest(self):
        return self.manager.lastGoodStamp() or 0

    def unit_system(self):
        """The database's unit system, or the preferred one for an empty database."""
        if self.manager.std_unit_system is None:
            row = self.manager.getSql('SELECT usUnits FROM %s LIMIT 1' % self.table)
            if row is not None:
                self.manager.std_unit_system = row[0]
        return self.manager.std_unit_system or self.preferred_units

    def prepare(self, record, label=''):
        """A copy of record in this database's unit system with only its columns."""
        units = self.unit_system()
        if units is not None and record.get('usUnits') != units:
            record = weewx.units.to_std_system(record, units)
        if 'windGustDir' not in record and 'windGustDir' in self.column_set:
            # None values travel as absent keys; WeeWX's wind accumulator tells the two apart
            record = dict(record, windGustDir=None)
        if record.keys() <= self.column_set:
            return record
        extra = [k for k in record if k not in self.column_set]
        if extra:
            new = sorted(set(extra) - self.dropped_warned)
            if new:
                self.dropped_warned.update(new)
                log.warning("%s: database '%s' has no column for %s; dropped", label,
                            self.name, ', '.join(new))
            record = {k: v for k, v in record.items() if k in self.column_set}
        return record

    def read_page(self, since, until, limit):
        select = 'SELECT %s FROM %s' % (', '.join(self.columns), self.table)
        return _read_page(self.manager.connection, select, self.columns, since, until, limit)

    def digest(self, since, until, bucket, columns):
        return digest_range(self.read_page, since, until, bucket, columns)

    def replace_range(self, first_exclusive, last_inclusive, records):
        """Make the rows first_exclusive < dateTime <= last_inclusive exactly `records`
        (prepared, all in that range, one per dateTime), then rebuild the daily summaries of
        the days touched from the archive.

        One transaction replaces the rows, deletes those days' summaries and marks the
        summaries complete only up to the first of them; the rebuild then marks them
        complete again. A crash in between leaves summaries that WeeWX (at weewxd's start)
        and TargetDatabase (at open) know to rebuild, never wrong ones."""
        self.finish_bulk()          # only a range is rebuilt: everything else must be done
        groups = {}
        for record in records:
            groups.setdefault(tuple(record), []).append(tuple(record.values()))
        days = archive_date(first_exclusive + 1), \
            archive_date(last_inclusive) + datetime.timedelta(days=1)
        with weedb.Transaction(self.manager.connection) as cursor:
            cursor.execute('DELETE FROM %s WHERE dateTime > ? AND dateTime <= ?' % self.table,
                           (first_exclusive, last_inclusive))
            for columns, rows in groups.items():
                sql = 'INSERT INTO %s (%s) VALUES (%s)' % (self.table, ', '.join(columns),
                                                          ', '.join('?' * len(columns)))
                for row in rows:
                    cursor.execute(sql, row)
            self._forget_summaries(cursor, days)
        self._rebuild_summaries(days)

    def rebuild_days(self, first, last):
        """Rebuild the daily summaries of the days of first..last (dateTimes) from the
        archive, crash-safe as replace_range: records added out of order (holes filled) make
        WeeWX's running summaries differ from a build in order (ties of min and max)."""
        self.finish_bulk()
        days = archive_date(first), archive_date(last) + datetime.timedelta(days=1)
        with weedb.Transaction(self.manager.connection) as cursor:
            self._forget_summaries(cursor, days)
        self._rebuild_summaries(days)

    def _forget_summaries(self, cursor, days):
        """Delete the summaries of days (first date, date after the last) and mark the
        summaries complete only up to the first of them."""
        if not self.has_summaries:
            return
        first_day, after_day = (int(time.mktime(d.timetuple())) for d in days)
        # days left without records must lose their summaries too
        for key in self.manager.daykeys:
            cursor.execute('DELETE FROM %s_day_%s WHERE dateTime >= ? AND dateTime < ?'
                           % (self.table, key), (first_day, after_day))
        self.manager._write_metadata('lastUpdate', str(first_day), cursor)

    def _rebuild_summaries(self, days):
        """Rebuild the days _forget_summaries() deleted, then mark the summaries complete."""
        if not self.has_summaries:
            return
        manager = self.manager
        start_d, after_d = days
        first_day = int(time.mktime(start_d.timetuple()))
        manager._sync()
        if manager.last_timestamp is None:
            return
        if manager.last_timestamp <= first_day:
            # nothing from the first day on: the summaries are complete as they are
            with weedb.Transaction(manager.connection) as cursor:
                manager._write_metadata('lastUpdate', str(int(manager.last_timestamp)), cursor)
            return
        backfill_day_summary(manager, (start_d, after_d))

    def neighbours(self, timestamp):
        """(dateTime of the record before timestamp or 0, of the record after it or 0)."""
        before = previous_timestamp(self.manager, timestamp)
        row = self.manager.getSql('SELECT MIN(dateTime) FROM %s WHERE dateTime > ?'
                                  % self.table, (timestamp,))
        return before, (row[0] or 0) if row else 0

    def existing(self, first, last):
        rows = _fetch_all(self.manager.connection,
                          'SELECT dateTime FROM %s WHERE dateTime >= ? AND dateTime <= ?'
                          % self.table, (first, last))
        return {r[0] for r in rows}

    def store_bulk(self, records):
        """Insert archive rows of records not stored yet, in one transaction. Returns the
        number inserted. Daily summaries wait for finish_bulk()."""
        if not records:
            return 0
        first = min(r['dateTime'] for r in records)
        last = max(r['dateTime'] for r in records)
        present = self.existing(first, last)
        groups = {}          # records with the same columns share one INSERT statement
        for record in records:
            ts = record['dateTime']
            if ts in present:
                continue
            present.add(ts)
            groups.setdefault(tuple(record), []).append(tuple(record.values()))
        if not groups:
            return 0
        if self.manager.std_unit_system is None:
            self.manager.std_unit_system = records[0]['usUnits']
        count = 0
        with weedb.Transaction(self.manager.connection) as cursor:
            for columns, rows in groups.items():
                sql = 'INSERT INTO %s (%s) VALUES (%s)' % (self.table, ', '.join(columns),
                                                          ', '.join('?' * len(columns)))
                executemany = getattr(cursor, 'executemany', None)
                if executemany is not None:
                    executemany(sql, rows)
                else:
                    for row in rows:
                        cursor.execute(sql, row)
                count += len(rows)
        self.summaries_pending = self.has_summaries
        return count

    def finish_bulk(self):
        """Bring the daily summaries up to date after bulk stores."""
        if not self.summaries_pending:
            return
        self.manager._sync()
        started = time.monotonic()
        nrecs, ndays = backfill_day_summary(self.manager)
        log.info("database '%s': daily summaries of %d days updated with %d records in %.1f s",
                 self.name, ndays, nrecs, time.monotonic() - started)
        self.summaries_pending = False

    def store_one(self, record):
        """Store one record with its daily summary. Returns True if stored, False if it was
        there already."""
        self.finish_bulk()
        ts = record['dateTime']
        if self.existing(ts, ts):
            return False
        last_update = weeutil.weeutil.to_int(self.manager._read_metadata('lastUpdate')) \
            if self.has_summaries else None
        if last_update and ts < last_update and hasattr(self.manager, '_addSingleRecord'):
            # An older record: WeeWX would move lastUpdate back to it, and the next start
            # would rebuild every day since. Its own day is updated here, the others were
            # and are complete, so lastUpdate stays, in the same transaction.
            with weedb.Transaction(self.manager.connection) as cursor:
                self.manager._addSingleRecord(record, cursor, log_success=False)
                self.manager._write_metadata('lastUpdate', str(last_update), cursor)
            self.manager._sync()
            return True
        return self.manager.addRecord(record, log_success=False) > 0


TRANCHE_DAYS = 5


def backfill_day_summary(manager, days=None):
    """What DaySummaryManager.backfill_day_summary() does, about three times faster.

    days: (first date, date after the last) to rebuild only those days (whose summaries were
    deleted), then mark the summaries complete; by default, from metadata lastUpdate to the
    newest record.

    WeeWX's version hands every record to its day accumulator with all ~115 columns, most of
    them None. Adding a None value only creates the statistics of its type, so here the first
    record of each day goes in whole (creating every type, as WeeWX does) and the others
    without their None values. Same accumulators, same additions in the same order: the
    summaries come out identical. Falls back to WeeWX's own code if its internals differ."""
    needed = ('_set_day_summary', '_read_metadata', '_write_metadata', '_get_backfill_range',
              '_calc_weight')
    if not all(hasattr(manager, name) for name in needed):
        return manager.backfill_day_summary(progress_fn=None)      # from lastUpdate on
    if manager.first_timestamp is None:
        return 0, 0
    last_daily_ts = weeutil.weeutil.to_int(manager._read_metadata('lastUpdate'))
    if days is None:
        first_d, last_d = manager._get_backfill_range(last_daily_ts, None, None, None)
        if first_d is None:
            return 0, 0
    else:
        first_d, last_d = days
    columns = list(manager.sqlkeys)
    select = 'SELECT %s FROM %s WHERE dateTime > ? AND dateTime <= ? ORDER BY dateTime ASC' \
        % (', '.join(columns), manager.table_name)
    ts_index = columns.index('dateTime')
    gust_dir = 'windGustDir' in columns
    nrecs = ndays = 0
    mark_d = first_d
    while mark_d < last_d:
        stop_d = min(mark_d + datetime.timedelta(days=TRANCHE_DAYS), last_d)
        rows = _fetch_all(manager.connection, select,
                          (time.mktime(mark_d.timetuple()), time.mktime(stop_d.timetuple())))
        day_accum = None
        with weedb.Transaction(manager.connection) as cursor:
            for row in rows:
                ts = row[ts_index]
                if day_accum is None or not day_accum.timespan.includesArchiveTime(ts):
                    if day_accum is not None:
                        manager._set_day_summary(day_accum, None, cursor)
                        ndays += 1
                    day_accum = weewx.accum.Accum(weeutil.weeutil.archiveDaySpan(ts))
                    record = dict(zip(columns, row))
                else:
                    record = {k: v for k, v in zip(columns, row) if v is not None}
                    if gust_dir and 'windGustDir' not in record:
                        # the wind accumulator takes windDir when windGustDir is absent,
                        # but not when it is None: keep it
                        record['windGustDir'] = None
                try:
                    weight = manager._calc_weight(record)
                except (weewx.manager.IntervalError, ValueError, TypeError) as e:
                    log.info('record %s ignored in daily summaries: %s', ts, e)
                    continue
                day_accum.addRecord(record, weight=weight)
                last_daily_ts = ts if last_daily_ts is None else max(last_daily_ts, ts)
                nrecs += 1
            if day_accum is not None and not day_accum.isEmpty:
                manager._set_day_summary(day_accum, None, cursor)
                ndays += 1
            if last_daily_ts:
                manager._write_metadata('lastUpdate', str(int(last_daily_ts)), cursor)
        mark_d = stop_d
    if days is not None:
        # the days after the range were complete before: so is everything now
        with weedb.Transaction(manager.connection) as cursor:
            manager._write_metadata('lastUpdate', str(int(manager.last_timestamp)), cursor)
    return nrecs, ndays
