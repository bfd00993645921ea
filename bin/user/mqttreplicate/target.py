"""A secondary's database: TargetDatabase (bulk stores, the primary's daily summaries stored
as they are or rebuilt, digests, repairs), through weewx's managers and weedb only, SQLite and
MySQL alike; and the daily summaries' backfill it uses.

Opened, used and closed by one thread (WEEWX-NOTES §3.6), like everything in database.py.
"""

import datetime
import logging
import math
import os
import time

import weedb
import weeutil.weeutil
import weewx
import weewx.accum
import weewx.manager
import weewx.units

from . import database, protocol
from .database import (RECONNECT_FOR, SECONDARY_GRANTS, archive_date, day_columns, day_start,
                       digest_range, fetch_all, first_after, grants_error, previous_timestamp,
                       reconnecting)
from .sqlbulk import insert_rows, is_mysql, run_statements

log = logging.getLogger(__name__)


class TargetDatabase:
    """The secondary's side of one binding: stores records, in bulk or one by one.

    Bulk stores insert archive rows only; the daily summaries are rebuilt for the new range
    by finish_bulk() (as `weectl database transfer` does), which also runs before any single
    record is stored so the summaries never miss a row."""

    needs = SECONDARY_GRANTS

    def __init__(self, mgr_dict, initialize=True, preferred_units=None, manager=None):
        """manager: an already opened manager to use (the engine's, on its thread)."""
        self.owned = manager is None
        if manager is None:
            root = mgr_dict['database_dict'].get('SQLITE_ROOT')
            if initialize and root:
                # the engine thread may be creating it at the same moment
                os.makedirs(root, exist_ok=True)
            try:
                manager = weewx.manager.open_manager(mgr_dict, initialize=initialize)
            except weedb.DatabaseError as e:
                denied = grants_error(e, mgr_dict['database_dict'])
                if denied is None:
                    raise
                raise denied from e
        self.manager = manager
        self.name = getattr(manager, 'database_name', '?')
        self.database_dict = mgr_dict['database_dict'] if mgr_dict else {
            'database_name': self.name}
        self.table = manager.table_name
        self.columns = list(manager.sqlkeys)
        self.column_set = frozenset(self.columns)
        self.preferred_units = preferred_units
        self.summaries_pending = False
        self.dropped_warned = set()
        self.has_summaries = hasattr(manager, 'backfill_day_summary')
        self.days_checked = {}         # what DayRows looked like -> why they cannot be used
        # whether the last of the primary's summaries could be stored as they are (None: none
        # seen yet): only then can a verification compare the summaries
        self.copies_days = None
        if self.has_summaries:
            # A bulk store whose summaries were never rebuilt (a crash in between)?
            last_update = weeutil.weeutil.to_int(manager._read_metadata('lastUpdate'))
            newest = manager.lastGoodStamp()
            self.summaries_pending = bool(newest and (last_update or 0) < newest)
            if manager._read_metadata(COPIED_KEY) is None:
                # from now on kept (a new database: nothing copied yet)
                with weedb.Transaction(manager.connection) as cursor:
                    self._set_copied(cursor, min(newest or 0, last_update or 0))

    def close(self):
        if self.owned:
            self.manager.close()

    @reconnecting(RECONNECT_FOR)
    def newest(self):
        return self.manager.lastGoodStamp() or 0

    @reconnecting(RECONNECT_FOR)
    def unit_system(self):
        """The database's unit system, or the preferred one for an empty database."""
        if self.manager.std_unit_system is None:
            row = self.manager.getSql('SELECT usUnits FROM %s LIMIT 1' % self.table)
            if row is not None:
                self.manager.std_unit_system = row[0]
        return self.manager.std_unit_system or self.preferred_units

    @property
    def holds_infinity(self):
        """Can this database store an infinite float? SQLite can; MySQL cannot."""
        return not is_mysql(self.manager.connection)

    def _without_infinity(self, names, rows, what):
        """rows (tuples in the order of names) with every infinite value NULL, each named in
        a warning: what this database stores of a value it cannot hold."""
        if self.holds_infinity:
            return rows
        bad = [i for i, values in enumerate(zip(*rows)) if not protocol.finite_only(values)]
        if not bad:
            return rows
        rows = [list(row) for row in rows]
        at = list(names).index('dateTime')
        for row in rows:
            for i in bad:
                value = row[i]
                if value.__class__ is float and math.isinf(value):
                    row[i] = None
                    log.warning("database '%s' cannot hold %s of %s %s (%r): stored as NULL",
                                self.name, names[i], what, row[at], value)
        return [tuple(row) for row in rows]

    def prepare(self, record, label=''):
        """A copy of record in this database's unit system with only its columns (an
        infinite value NULL where the database cannot hold one)."""
        record = self._prepare(record, label)
        if not self.holds_infinity:
            names = list(record)
            (row,) = self._without_infinity(names, [tuple(record.values())], 'record')
            record = dict(zip(names, row))
        return record

    def _prepare(self, record, label):
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

    @reconnecting(RECONNECT_FOR)
    def read_page(self, since, until, limit):
        select = 'SELECT %s FROM %s' % (', '.join(self.columns), self.table)
        return database.read_page(self.manager.connection, select, self.columns, since, until,
                                  limit)

    @reconnecting(RECONNECT_FOR)
    def digest(self, since, until, bucket, columns, summaries=False, null_inf=False):
        return digest_range(self.read_page, since, until, bucket, columns,
                            self.manager if summaries and self.has_summaries else None,
                            null_inf)

    @reconnecting(RECONNECT_FOR)
    def replace_range(self, first_exclusive, last_inclusive, records):
        """Make the rows first_exclusive < dateTime <= last_inclusive exactly `records`
        (prepared, all in that range, one per dateTime), then rebuild the daily summaries of
        the days touched from the archive. (Those days hold records outside the range too,
        which may not be the primary's: the primary's summaries of a day are stored only
        where its records are known to be the same, see verify.)

        One transaction replaces the rows, deletes those days' summaries and marks the
        summaries complete only up to the first of them; the rebuild then marks them
        complete again. A crash in between leaves summaries that WeeWX (at weewxd's start)
        and TargetDatabase (at open) know to rebuild, never wrong ones."""
        self.finish_bulk()          # only a range is rebuilt: everything else must be done
        days = archive_date(first_exclusive + 1), \
            archive_date(last_inclusive) + datetime.timedelta(days=1)
        with weedb.Transaction(self.manager.connection) as cursor:
            cursor.execute('DELETE FROM %s WHERE dateTime > ? AND dateTime <= ?' % self.table,
                           (first_exclusive, last_inclusive))
            self._insert_records(cursor, records)
            self._forget_summaries(cursor, days)
        self._rebuild_summaries(days)

    # --- the primary's daily summaries, as they are -------------------------------------------

    @reconnecting(RECONNECT_FOR)
    def days_mismatch(self, day_rows):
        """Why the primary's daily summaries (summaries.DayRows) cannot be stored here as
        they are (a unit system, a version, observation types or columns that differ), or
        None if they can. Checked once for each shape of DayRows."""
        shape = (day_rows.units, day_rows.version,
                 tuple(sorted((name, columns) for name, (columns, _) in day_rows.tables.items())))
        if shape not in self.days_checked:
            self.days_checked[shape] = self._mismatch(day_rows)
        why = self.days_checked[shape] or self._other_days(day_rows)
        self.copies_days = why is None
        return why

    @staticmethod
    def _other_days(day_rows):
        """Why the days of day_rows are not this station's days (its time zone differs),
        or None."""
        starts = {day_rows.first} | {row[0] for _, rows in day_rows.tables.values()
                                     for row in rows}
        if any(day_start(ts + 1) != ts for ts in starts) \
                or (day_rows.stop > day_rows.first and day_start(day_rows.stop + 1)
                    != day_rows.stop):
            return ("the primary's days start at other times than here (another time "
                    "zone)")
        return None

    def _mismatch(self, day_rows):
        if not self.has_summaries:
            return "database '%s' keeps no daily summaries" % self.name
        nick = weewx.units.unit_nicknames
        units = self.unit_system()
        if units is not None and units != day_rows.units:
            return 'the unit systems differ (primary %s, here %s)' % (
                nick.get(day_rows.units, day_rows.units), nick.get(units, units))
        version = str(self.manager.version)
        if version != day_rows.version:
            return 'the daily summaries are of version %s on the primary, %s here' % (
                day_rows.version, version)
        theirs, ours = day_rows.types, frozenset(self.manager.daykeys)
        if theirs != ours:
            def names(types):
                types = sorted(types)
                return ', '.join(types[:5]) + (' and %d more' % (len(types) - 5)
                                               if len(types) > 5 else '') or 'none'
            return 'the observation types differ (only on the primary: %s; only here: %s)' % (
                names(theirs - ours), names(ours - theirs))
        for name, (columns, _) in sorted(day_rows.tables.items()):
            if day_columns(self.manager, name) != columns:
                return 'the columns of %s_day_%s differ' % (self.table, name)
        return None

    @reconnecting(RECONNECT_FOR)
    def summaries_complete(self):
        """Up to where the daily summaries here are complete: the newest record, or metadata
        lastUpdate if older."""
        newest = self.newest()
        if not self.has_summaries or not newest:
            return newest
        return min(newest, self._last_update())

    def _last_update(self):
        return weeutil.weeutil.to_int(self.manager._read_metadata('lastUpdate')) or 0

    # The replicated position of the daily summaries: every record here with dateTime <= it
    # has its day's summaries as the primary has them. WeeWX's lastUpdate says only that
    # the summaries count the records; a rebuild here (an interrupted catch-up, weewxd's own
    # start-up backfill, a repair) moves it past days whose LOOP highs and lows are then
    # lost, so this position is kept apart, in the same metadata table, and moved only by
    # the primary's summaries (forward) and by rebuilds of older days (back).

    @reconnecting(RECONNECT_FOR)
    def copied(self):
        """The replicated position of the daily summaries (see above), 0 for none. A
        database that never had one (an older version of this extension made it) counts
        as copied where its summaries are complete."""
        if not self.has_summaries:
            return 0
        value = weeutil.weeutil.to_int(self.manager._read_metadata(COPIED_KEY))
        if value is None:
            return self.summaries_complete()
        return value

    def _set_copied(self, cursor, value):
        self.manager._write_metadata(COPIED_KEY, str(int(value)), cursor)

    def _copied_back(self, cursor, ts):
        """Days from the one after ts on are rebuilt here: the position goes back to ts."""
        if self.has_summaries and ts < self.copied():
            self._set_copied(cursor, ts)

    @reconnecting(RECONNECT_FOR)
    def days_wanted(self, since):
        """From where (a dateTime: its day) a catch-up since `since` should bring the
        primary's daily summaries: the day of the first record here that lacks them (or of
        the position itself, a day weewxd's backfill may have rebuilt), else since's."""
        return min(since, self.copied() or self.oldest() or since)

    @reconnecting(RECONNECT_FOR)
    def oldest(self):
        """dateTime of the oldest record here, or 0."""
        row = fetch_all(self.manager.connection, 'SELECT MIN(dateTime) FROM %s' % self.table)
        return (row[0][0] or 0) if row else 0

    def _records_between(self, after, upto):
        """Are there records with after < dateTime <= upto?"""
        return upto > after and first_after(self.manager.connection, self.table, after,
                                            upto) is not None

    @reconnecting(RECONNECT_FOR)
    def days_fit(self, day_rows, oldest=None):
        """Can the primary's daily summaries of some days (summaries.DayRows) be stored here
        as they are, in place of what those days have (with records about to be stored,
        the oldest at `oldest`)? Not if days_mismatch() says why, nor if they do not fit
        what is here: summaries not complete up to their first day, records to be stored
        before it, or, for a live record's day (through), newer records of that day here
        (a late redelivery). What is here is then left as WeeWX made it."""
        if self.days_mismatch(day_rows) is not None:
            return False
        if oldest is not None and day_start(oldest) < day_rows.first:
            log.debug("database '%s': daily summaries from %s not stored: records of days "
                      "before them come with them", self.name, day_rows.first)
            return False
        if self._records_between(self._last_update(), day_rows.first):
            log.debug("database '%s': daily summaries from %s not stored: those before are not "
                      "complete", self.name, day_rows.first)
            return False
        if day_rows.through is not None \
                and self._records_between(day_rows.through, day_rows.stop):
            log.debug("database '%s': daily summaries through %s not stored: newer records "
                      "of that day are here", self.name, day_rows.through)
            return False
        return True

    @reconnecting(RECONNECT_FOR)
    def store_days(self, day_rows):
        """Store the primary's daily summaries of some days as they are, if they fit
        (days_fit()), in one transaction. True if stored."""
        if not self.days_fit(day_rows):
            return False
        self.write_days(day_rows)
        return True

    @reconnecting(RECONNECT_FOR)
    def write_days(self, day_rows):
        """Store the primary's daily summaries that days_fit() found fitting, in one
        transaction."""
        with weedb.Transaction(self.manager.connection) as cursor:
            self._write_days(cursor, day_rows)

    def _write_days(self, cursor, day_rows):
        """Replace the summaries of day_rows' days, in an open transaction; the summaries
        are then complete up to the end of those days (or the newest record), if they were
        up to their first day."""
        manager = self.manager
        first, stop = day_rows.first, day_rows.stop
        self._clear_days(cursor, day_rows)
        later = []
        for name, (columns, rows) in day_rows.tables.items():
            rows = self._without_infinity(columns, rows, 'the daily summary %s of' % name)
            insert_rows(manager.connection, cursor, '%s_day_%s' % (self.table, name), columns,
                        rows, replace=True, later=later)
        run_statements(manager.connection, cursor, later)
        row = fetch_all(manager.connection, 'SELECT MAX(dateTime) FROM %s' % self.table)
        newest = (row[0][0] or 0) if row else 0
        last_update = self._last_update()
        through = newest if newest <= stop else stop
        complete = max(last_update, through)
        if complete != last_update:
            manager._write_metadata('lastUpdate', str(complete), cursor)
        self.summaries_pending = newest > complete
        copied = self.copied()
        # the position moves on only over days that follow it without a gap
        if through > copied and not self._records_between(copied, first):
            self._set_copied(cursor, through)

    def _clear_days(self, cursor, day_rows):
        """Delete the summaries of day_rows' days that its rows do not replace. SQLite: a
        DELETE per type. MySQL: one SELECT over every type's table finds them (usually
        none), then a DELETE per table that has any: a round trip each costs more there."""
        first, stop = day_rows.first, day_rows.stop
        keys = self.manager.daykeys
        if not keys:
            return
        if not is_mysql(self.manager.connection):
            for key in keys:
                cursor.execute('DELETE FROM %s_day_%s WHERE dateTime >= ? AND dateTime < ?'
                               % (self.table, key), (first, stop))
            return
        found = fetch_all(self.manager.connection, ' UNION ALL '.join(
            "SELECT '%s', dateTime FROM %s_day_%s WHERE dateTime >= %d AND dateTime < %d"
            % (key, self.table, key, first, stop) for key in keys))
        kept = {}
        for key, (columns, rows) in day_rows.tables.items():
            at = list(columns).index('dateTime')
            kept[key] = {row[at] for row in rows}
        stale = {}
        for key, ts in found:
            if ts not in kept.get(key, ()):
                stale.setdefault(key, []).append(int(ts))
        for key, times in stale.items():
            cursor.execute('DELETE FROM %s_day_%s WHERE dateTime IN (%s)'
                           % (self.table, key, ','.join(map(str, times))))

    def _rebuilding_from(self, last_update):
        """A backfill from lastUpdate is about to rebuild the days from its calendar day on:
        the replicated position goes back before them first."""
        if not self.has_summaries or not last_update:
            return
        midnight = int(time.mktime(datetime.date.fromtimestamp(last_update).timetuple()))
        if midnight < self.copied():
            with weedb.Transaction(self.manager.connection) as cursor:
                self._set_copied(cursor, midnight)

    def _insert_records(self, cursor, records):
        """Insert records (dicts) into the archive table, in an open transaction. Returns
        the count."""
        columns = protocol.Columns.of(records)
        return insert_rows(self.manager.connection, cursor, self.table, columns.names,
                           columns.rows, records=True)

    @reconnecting(RECONNECT_FOR)
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
        self._copied_back(cursor, first_day)

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

    @reconnecting(RECONNECT_FOR)
    def neighbours(self, timestamp):
        """(dateTime of the record before timestamp or 0, of the record after it or 0)."""
        before = previous_timestamp(self.manager, timestamp)
        row = self.manager.getSql('SELECT MIN(dateTime) FROM %s WHERE dateTime > ?'
                                  % self.table, (timestamp,))
        return before, (row[0] or 0) if row else 0

    @reconnecting(RECONNECT_FOR)
    def existing(self, first, last):
        rows = fetch_all(self.manager.connection,
                         'SELECT dateTime FROM %s WHERE dateTime >= ? AND dateTime <= ?'
                         % self.table, (first, last))
        return {r[0] for r in rows}

    def prepare_bulk(self, records, label=''):
        """Records (protocol.Columns, or dicts) as Columns ready for store_bulk(): as they
        are if prepare() would change none of them (this database's unit system, only its
        columns), else each record through prepare()."""
        if isinstance(records, protocol.Columns) and set(records.names) <= self.column_set:
            units = set(records.column('usUnits'))
            if len(units) == 1 and self.unit_system() in (None, *units):
                if self.holds_infinity:
                    return records
                return protocol.Columns(records.names, self._without_infinity(
                    records.names, records.rows, 'record'))
        return protocol.Columns.of([self.prepare(record, label) for record in records])

    @reconnecting(RECONNECT_FOR)
    def store_bulk(self, columns, day_rows=None):
        """Insert the archive rows of records (protocol.Columns from prepare_bulk()) not
        stored yet, in one transaction, with the primary's daily summaries of their days
        (day_rows, a summaries.DayRows that fits: see days_fit()) if given. Returns the
        number inserted. Daily summaries not given wait for finish_bulk()."""
        if not columns:
            return 0
        times = columns.column('dateTime')
        present = self.existing(min(times), max(times))
        rows = columns.rows
        if not present.isdisjoint(times) or len(set(times)) != len(times):
            rows = []
            for ts, row in zip(times, columns.rows):
                if ts not in present:
                    present.add(ts)
                    rows.append(row)
        if self.manager.std_unit_system is None:
            self.manager.std_unit_system = columns[0]['usUnits']
        if not rows and day_rows is None:
            return 0
        with weedb.Transaction(self.manager.connection) as cursor:
            count = insert_rows(self.manager.connection, cursor, self.table, columns.names,
                                rows, records=True)
            if day_rows is not None:
                self._write_days(cursor, day_rows)      # summaries_pending follows
        if day_rows is None:
            self.summaries_pending = self.has_summaries
        return count

    @reconnecting(RECONNECT_FOR)
    def finish_bulk(self):
        """Bring the daily summaries up to date after bulk stores."""
        if not self.summaries_pending:
            return
        self.manager._sync()
        # WeeWX's backfill rebuilds from the calendar day of lastUpdate on
        self._rebuilding_from(self._last_update())
        started = time.monotonic()
        nrecs, ndays = backfill_day_summary(self.manager)
        log.info("database '%s': daily summaries of %d days updated with %d records in %.1f s",
                 self.name, ndays, nrecs, time.monotonic() - started)
        self.summaries_pending = False

    @reconnecting(RECONNECT_FOR)
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


COPIED_KEY = 'mqttreplicate_copied'   # metadata: the replicated position of the summaries
TRANCHE_DAYS = 5       # days of archive rows read at once
WRITE_DAYS = 60        # days of summaries written in one transaction (a statement per type)


def write_day_summaries(manager, cursor, accumulators):
    """Write the daily summaries of the days of accumulators (weewx.accum.Accum, one per
    day) in an open transaction, replacing what those days had: what WeeWX's
    _set_day_summary() does for one day with a DELETE and an INSERT per type, here one
    REPLACE per type for all the days (insert_rows)."""
    per_type = {}
    for accum in accumulators:
        manager._check_unit_system(accum.unit_system)
        sod = accum.timespan.start
        for obs_type in accum:
            if obs_type in manager.daykeys:
                per_type.setdefault(obs_type, []).append(
                    (sod,) + accum[obs_type].getStatsTuple())
    for obs_type, rows in per_type.items():
        insert_rows(manager.connection, cursor, '%s_day_%s' % (manager.table_name, obs_type),
                    None, rows, replace=True)


def backfill_day_summary(manager, days=None):
    """What DaySummaryManager.backfill_day_summary() does, several times faster.

    days: (first date, date after the last) to rebuild only those days (whose summaries were
    deleted), then mark the summaries complete; by default, from metadata lastUpdate to the
    newest record.

    WeeWX's version hands every record to its day accumulator with all ~115 columns, most of
    them None. Adding a None value only creates the statistics of its type, so here the first
    record of each day goes in whole (creating every type, as WeeWX does) and the others
    without their None values. Same accumulators, same additions in the same order: the
    summaries come out identical. They are written WRITE_DAYS days at a time, one statement
    per type (a round trip per day and type is what makes WeeWX's slow on MySQL), with
    lastUpdate in the same transaction. Falls back to WeeWX's own code if its internals
    differ."""
    needed = ('_check_unit_system', '_read_metadata', '_write_metadata',
              '_get_backfill_range', '_calc_weight', 'daykeys')
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
    where = ' FROM %s WHERE dateTime > ? AND dateTime <= ?' % manager.table_name
    count_used = 'SELECT %s' % ', '.join('COUNT(%s)' % c for c in columns) + where
    gust_dir = 'windGustDir' in columns
    nrecs = ndays = 0
    pending = []              # the days built and not written yet
    mark_d = first_d
    while mark_d < last_d:
        stop_d = min(mark_d + datetime.timedelta(days=TRANCHE_DAYS), last_d)
        span = (time.mktime(mark_d.timetuple()), time.mktime(stop_d.timetuple()))
        # Only the columns with a value in the tranche are read (a count per column is one
        # scan in the server; most of ~115 columns are empty, and reading them costs the
        # MySQL driver as much as reading values): the others are None in every row.
        counts = fetch_all(manager.connection, count_used, span)[0]
        used = [c for c, n in zip(columns, counts) if n]
        rows = fetch_all(manager.connection, 'SELECT %s%s ORDER BY dateTime ASC'
                         % (', '.join(used), where), span) if used else []
        ts_index = used.index('dateTime') if rows else 0
        day_accum = None
        for row in rows:
            ts = row[ts_index]
            if day_accum is None or not day_accum.timespan.includesArchiveTime(ts):
                if day_accum is not None:
                    pending.append(day_accum)
                day_accum = weewx.accum.Accum(weeutil.weeutil.archiveDaySpan(ts))
                record = dict.fromkeys(columns)        # every column, in the table's order
                record.update(zip(used, row))
            else:
                record = {k: v for k, v in zip(used, row) if v is not None}
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
            pending.append(day_accum)
        mark_d = stop_d
        if len(pending) >= WRITE_DAYS or mark_d >= last_d:
            with weedb.Transaction(manager.connection) as cursor:
                write_day_summaries(manager, cursor, pending)
                if last_daily_ts:
                    manager._write_metadata('lastUpdate', str(int(last_daily_ts)), cursor)
            ndays += len(pending)
            pending = []
    if days is not None:
        # the days after the range were complete before: so is everything now
        with weedb.Transaction(manager.connection) as cursor:
            manager._write_metadata('lastUpdate', str(int(manager.last_timestamp)), cursor)
    return nrecs, ndays
