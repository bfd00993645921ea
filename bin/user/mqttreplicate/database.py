"""Database access for both roles, through weewx's managers and weedb only: what both
roles share (a MySQL server gone away, reading pages and digests, daily summaries as they
are) and the primary's side (SourceDatabase). A secondary's side is target.py.

A WeeWX database connection may be used only by the thread that opened it (WEEWX-NOTES §3.6):
every object here is opened, used and closed by one thread. Reads on the primary are short
statements, fully fetched, so the primary's own writes never wait for us.
"""

import datetime
import functools
import logging
import time

import weedb
import weeutil.weeutil
import weewx
import weewx.accum
import weewx.manager
import weewx.units

from . import protocol, summaries
from .faults import is_termination
from .sqlbulk import is_mysql

log = logging.getLogger(__name__)


def manager_dict(config_dict, binding, where=None):
    """The manager dictionary of a binding; a LookupError names the binding and `where`
    it was given (an option and its section)."""
    try:
        return weewx.manager.get_manager_dict_from_config(config_dict, binding)
    except Exception as e:
        raise LookupError("%sdata binding '%s' is not usable: %s: %s"
                          % (where + ': ' if where else '', binding, type(e).__name__, e)) \
            from None


def fetch_all(connection, sql, args=()):
    cursor = connection.cursor()
    try:
        cursor.execute(sql, args)
        fetchall = getattr(cursor, 'fetchall', None)
        if fetchall is None:
            # weedb's MySQL cursor has none; the driver's own cursor (buffered: the rows are
            # here already) gives plain tuples, without a per-value conversion in Python
            fetchall = getattr(getattr(cursor, 'cursor', None), 'fetchall', None)
        return fetchall() if fetchall is not None else list(iter(cursor.fetchone, None))
    finally:
        cursor.close()


# ------------------------------------------------------------------------------------------------
# A MySQL server gone away: reconnect and do it again
# ------------------------------------------------------------------------------------------------

LOST_CONNECTION = {1053, 1927, 2006, 2013, 2055, 4031}   # shutdown, killed, gone, lost, ...
RECONNECT_FOR = 60.0             # seconds a store waits for its server to come back
SOURCE_RECONNECT_FOR = 10.0      # a responder's worker, for its (a request is asked again)


def lost_connection(e):
    """True for an error that means the MySQL connection is gone (the server restarted,
    or killed our connection): the transaction was rolled back by the server."""
    if isinstance(e, (weedb.DisconnectError, weedb.CannotConnectError)):
        return True
    return isinstance(e, weedb.DatabaseError) and _error_code(e) in LOST_CONNECTION


DENIED = {1044, 1142, 1143, 1227}      # access denied to a database, a table, a column, ...
SECONDARY_GRANTS = 'CREATE, INSERT, UPDATE, DELETE, SELECT'


def _error_code(e):
    inner = e.args[0] if getattr(e, 'args', None) else None
    return getattr(inner, 'args', (None,))[0] if inner is not None else None


def grants_error(e, database_dict, needs=SECONDARY_GRANTS):
    """A MySQL error that says the user lacks a privilege, as one sentence naming the grants
    needed (a secondary's by default; a primary's responder needs SELECT); None for any
    other error."""
    if not isinstance(e, weedb.DatabaseError) or not (
            isinstance(e, weedb.PermissionError) or _error_code(e) in DENIED):
        return None
    name = database_dict.get('database_name', '?')
    user = database_dict.get('user', '?')
    return weedb.PermissionError(
        "database '%s' on %s:%s: %s; user '%s' needs %s on database %s (GRANT %s ON %s.* TO "
        "'%s'@'<this host>')" % (name, database_dict.get('host', 'localhost'),
                                 database_dict.get('port', 3306), e, user, needs, name, needs,
                                 name, user))


def reconnect(connection):
    """Open a MySQL connection again in place (the managers that hold it keep working),
    with the session settings weedb gives a new one."""
    raw = connection.connection
    try:
        raw.close()
    except Exception as e:
        if is_termination(e):
            raise
    raw.connect()            # the driver's own connection object opens a new session
    try:
        import weedb.mysql
        weedb.mysql.set_engine(raw, weedb.mysql.DEFAULT_ENGINE)
    except Exception as e:
        if is_termination(e):
            raise
        log.debug('storage engine not set again: %s', e)
    raw.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED')
    connection._replicate_server = None       # a new max_allowed_packet, perhaps, or place


def reconnecting(patience):
    """Decorator of a method of an object with .manager and .name: when the MySQL
    connection is lost, reconnect (for up to `patience` seconds) and call it again. Every
    such method is one or more complete transactions that can run again (a transaction the
    server lost was rolled back)."""
    def wrap(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            deadline = None
            pause = 0.5
            while True:
                try:
                    return method(self, *args, **kwargs)
                except Exception as e:
                    connection = self.manager.connection
                    if not is_mysql(connection):
                        raise
                    denied = grants_error(e, self.database_dict, self.needs)
                    if denied is not None:
                        raise denied from e
                    if not lost_connection(e):
                        raise
                    if deadline is None:
                        deadline = time.monotonic() + patience
                        log.warning("database '%s': connection lost (%s); reconnecting",
                                    self.name, e)
                    while True:
                        if time.monotonic() > deadline:
                            log.error("database '%s': no connection for %.0f s: %s",
                                      self.name, patience, e)
                            raise
                        time.sleep(pause)
                        pause = min(pause * 2, 5.0)
                        try:
                            reconnect(connection)
                            break
                        except Exception as again:
                            if is_termination(again):
                                raise
                            log.debug("database '%s': not yet: %s", self.name, again)
                    log.info("database '%s': reconnected", self.name)
        return wrapper
    return wrap


def _range_clause(since, until):
    """(' WHERE ...', args) of since < dateTime (<= until)."""
    if until is None:
        return ' WHERE dateTime > ?', [since]
    return ' WHERE dateTime > ? AND dateTime <= ?', [since, until]


def _read_rows(connection, select, since, until, limit):
    where, args = _range_clause(since, until)
    return fetch_all(connection, '%s%s ORDER BY dateTime ASC LIMIT %d'
                     % (select, where, int(limit)), args)


def read_page(connection, select, columns, since, until, limit):
    rows = _read_rows(connection, select, since, until, limit)
    return [{k: v for k, v in zip(columns, row) if v is not None} for row in rows]


DIGEST_PAGE = 2000      # records read at once for a digest: memory stays bounded


def digest_range(read_page, since, until, bucket, columns, manager=None, null_inf=False):
    """summaries.digest_buckets of the records since < dateTime <= until, read in short,
    fully fetched pages; with a manager that keeps daily summaries, each entry also has
    the digest of the summaries of the days that start in its bucket."""
    buckets = _digest_records(read_page, since, until, bucket, columns, null_inf)
    if manager is None or not keeps_summaries(manager):
        return buckets
    return summaries.with_day_digests(buckets, day_digests(manager, since, until, bucket,
                                                           null_inf))


def _digest_records(read_page, since, until, bucket, columns, null_inf=False):
    def records():
        last = since
        while True:
            page = read_page(last, until, DIGEST_PAGE)
            yield from page
            if len(page) < DIGEST_PAGE:
                return
            last = page[-1]['dateTime']
    return summaries.digest_buckets(records(), columns, bucket, null_inf)


def archive_date(ts):
    """The local archive day a record belongs to (a record at midnight ends the day before),
    as WeeWX's daily summaries count days."""
    return datetime.date.fromtimestamp(weeutil.weeutil.startOfArchiveDay(ts))


# ------------------------------------------------------------------------------------------------
# Daily summaries as they are: read on the primary, written as they are on a secondary
# ------------------------------------------------------------------------------------------------

def keeps_summaries(manager):
    return bool(getattr(manager, 'daykeys', None)) and hasattr(manager, '_write_metadata')


def day_columns(manager, obs_type):
    """The columns of a manager's archive_day_<obs_type> table, in their order (read once
    per manager)."""
    cache = manager.__dict__.setdefault('_replicate_day_columns', {})
    columns = cache.get(obs_type)
    if columns is None:
        columns = cache[obs_type] = tuple(
            manager.connection.columnsOf('%s_day_%s' % (manager.table_name, obs_type)))
    return columns


def day_start(ts):
    """The start of the local archive day a record at ts belongs to."""
    return int(weeutil.weeutil.startOfArchiveDay(ts))


def day_stop(ts):
    """The start of the day after the archive day of ts."""
    return int(weeutil.weeutil.archiveDaySpan(ts).stop)


def first_after(connection, table, after, upto):
    """dateTime of the oldest record of table with after < dateTime <= upto, or None."""
    row = fetch_all(connection, 'SELECT MIN(dateTime) FROM %s WHERE dateTime > ? AND '
                    'dateTime <= ?' % table, (after, upto))
    return row[0][0] if row and row[0][0] is not None else None


def _day_rows(manager, obs_type, first, stop):
    """(columns, rows) of a manager's archive_day_<obs_type> with first <= dateTime < stop,
    fully fetched, in dateTime order."""
    columns = day_columns(manager, obs_type)
    return columns, fetch_all(manager.connection, 'SELECT %s FROM %s_day_%s WHERE dateTime '
                              '>= ? AND dateTime < ? ORDER BY dateTime' % (
                                  ', '.join(columns), manager.table_name, obs_type),
                              (first, stop))


def units_of(manager):
    units = manager.std_unit_system
    if units is None:
        row = fetch_all(manager.connection, 'SELECT usUnits FROM %s LIMIT 1'
                        % manager.table_name)
        units = row[0][0] if row else None
    return units


def read_days(manager, first, stop, through=None, units=None):
    """summaries.DayRows of the days first <= dateTime < stop as the manager's daily
    summaries hold them, or None (no summaries; no records yet, unless units says the unit
    system of the first). A short statement per observation type, each fully fetched."""
    if first >= stop or not keeps_summaries(manager):
        return None
    units = units_of(manager) or units
    if units is None:
        return None
    tables = {}
    for obs_type in sorted(manager.daykeys):
        columns, rows = _day_rows(manager, obs_type, first, stop)
        tables[obs_type] = (columns, [tuple(row) for row in rows])
    return summaries.DayRows(units, str(manager.version), first, stop, tables, through)


def live_days(manager, ts):
    """summaries.DayRows of the day of the record at ts, through ts, or None: also if a
    newer record of that day is stored already (its rows then count that record too, and
    the secondary would add it again)."""
    stop = day_stop(ts)
    days = read_days(manager, day_start(ts), stop, ts)
    if days is not None and first_after(manager.connection, manager.table_name, ts,
                                        stop) is not None:
        return None
    return days


def day_digests(manager, since, until, bucket, null_inf=False):
    """summaries.digest_days of a manager's daily summaries in the buckets of since <
    dateTime <= until, of whole days only (the day of until, which the primary may still be
    adding to, is left out), one short statement per observation type."""
    first, stop = (since + 1) - (since + 1) % bucket, day_start(until)

    tables = ((obs_type, _day_rows(manager, obs_type, first, stop)[1])
              for obs_type in sorted(manager.daykeys))       # one type's rows at a time
    return summaries.digest_days(tables, bucket, null_inf)


def _check_created(mgr_dict):
    """Raise NoDatabaseError or NoTableError while the engine has not created the database,
    its archive table and (for a manager that keeps them) its daily summaries: a new
    station's first start. Weewx's manager would log an error of its own first, or fail
    between the archive table and the summaries."""
    table = mgr_dict['table_name']
    needed = [table]
    manager_class = weeutil.weeutil.get_object(mgr_dict['manager'])
    if issubclass(manager_class, weewx.manager.DaySummaryManager):
        needed.append('%s_day__metadata' % table)
    connection = weedb.connect(mgr_dict['database_dict'])
    try:
        tables = connection.tables()
        for name in needed:
            if name not in tables:
                raise weedb.NoTableError("no table '%s' yet" % name)
    finally:
        connection.close()


class SourceDatabase:
    """The primary's side of one binding: short, fully fetched reads."""

    needs = 'SELECT'

    def __init__(self, mgr_dict):
        self.database_dict = mgr_dict['database_dict']
        try:
            _check_created(mgr_dict)
            self.manager = weewx.manager.open_manager(mgr_dict, initialize=False)
        except (weedb.NoDatabaseError, weedb.NoTableError):
            raise
        except weedb.DatabaseError as e:
            denied = grants_error(e, self.database_dict, self.needs)
            if denied is None:
                raise
            raise denied from e
        self.name = getattr(self.manager, 'database_name', '?')
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

    @reconnecting(SOURCE_RECONNECT_FOR)
    def newest(self):
        return self.manager.lastGoodStamp()

    @reconnecting(SOURCE_RECONNECT_FOR)
    def read_columns(self, since, until, limit):
        """read_page() as protocol.Columns: the rows as the database gives them, of the
        columns that hold a value in at least one of them (most of a wide schema's are
        NULL on most stations). The page's last dateTime is found in the index, then the
        database counts the values of each column over the page's range, in SQL; if the
        rows then read are not as many (a record stored or deleted in between), every
        column is read."""
        connection = self.manager.connection
        where, args = _range_clause(since, until)
        total, last = fetch_all(connection, 'SELECT COUNT(*), MAX(dateTime) FROM (SELECT '
                                'dateTime FROM %s%s ORDER BY dateTime ASC LIMIT %d) AS page'
                                % (self.table, where, int(limit)), args)[0]
        if not total:
            return protocol.Columns(tuple(self.columns), [])
        page = ' FROM %s WHERE dateTime > ? AND dateTime <= ?' % self.table
        counts = fetch_all(connection, 'SELECT %s%s' % (
            ', '.join('COUNT(%s)' % c for c in self.columns), page), (since, last))[0]
        names = tuple(c for c, n in zip(self.columns, counts) if n or c == 'dateTime')
        rows = fetch_all(connection, 'SELECT %s%s ORDER BY dateTime ASC'
                         % (', '.join(names), page), (since, last))
        if len(rows) != total:
            return protocol.Columns(tuple(self.columns), list(_read_rows(
                connection, self.select, since, until, limit)))
        return protocol.Columns(names, list(rows))

    @reconnecting(SOURCE_RECONNECT_FOR)
    def read_page(self, since, until, limit):
        """Up to `limit` records with since < dateTime <= until, oldest first, None values
        left out."""
        return read_page(self.manager.connection, self.select, self.columns, since, until,
                         limit)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def digest(self, since, until, bucket, columns, summaries=False, null_inf=False):
        return digest_range(self.read_page, since, until, bucket, columns,
                            self.manager if summaries else None, null_inf)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def unit_system(self):
        return units_of(self.manager)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def read_days(self, first, stop, through=None):
        return read_days(self.manager, first, stop, through)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def live_days(self, ts):
        return live_days(self.manager, ts)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def first_after(self, after, upto):
        return first_after(self.manager.connection, self.table, after, upto)

    @reconnecting(SOURCE_RECONNECT_FOR)
    def previous(self, timestamp):
        """dateTime of the newest record older than timestamp, or 0."""
        return previous_timestamp(self.manager, timestamp)

    @reconnecting(SOURCE_RECONNECT_FOR)
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
