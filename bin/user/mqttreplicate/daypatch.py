"""A live record's daily summaries as a patch: what differs from WeeWX's own update.

When WeeWX stores an archive record it updates the record's day (DaySummaryManager): it
merges the LOOP highs and lows of the archive period into the day's rows (loop_hilo), then
reads them into an accumulator, adds the record and writes them back. Both stations can add
the record themselves, from the same rows and the same record (predict); only what the LOOP
packets changed, usually a handful of cells, needs to travel. So the responder sends the cells where
its day differs from that prediction, and a digest of the whole day; the requester
predicts from its own rows, applies the cells and checks the digest: equal, or not stored.

    Patcher      the responder's side: the day it sent last, per binding, and make()
    apply()      the requester's side
"""

import math

import weeutil.weeutil
import weewx.accum

from . import database, summaries


def predict(base, record):
    """The rows of base's day (a summaries.DayRows of that one day, rows as they were before
    the record) that WeeWX's update with record writes: {type: (columns, [row])}. Raises
    on a record WeeWX would not add (no interval, outside the day). A None value counts as
    absent (the responder sends none; a secondary's schema may add them back), on both
    sides alike."""
    record = {name: value for name, value in record.items() if value is not None}
    first = base.first
    accum = weewx.accum.Accum(weeutil.weeutil.TimeSpan(first, base.stop), base.units)
    for name, (columns, rows) in base.tables.items():
        row = next((r for r in rows if r[0] == first), None)
        accum.set_stats(name, tuple(row[1:]) if row is not None else None)
    if not record.get('interval') or record['interval'] <= 0:
        raise ValueError('record %s has no interval' % record.get('dateTime'))
    weight = 60.0 * record['interval'] if base.version >= '2.0' else 1.0
    accum.addRecord(record, weight=weight)
    tables = {}
    for name, (columns, _) in base.tables.items():
        row = (first,) + tuple(accum[name].getStatsTuple())
        if len(row) != len(columns):
            raise ValueError('the accumulator of %s has %d values, the table %d columns'
                             % (name, len(row), len(columns)))
        tables[name] = (columns, [row])
    return tables


def _same(a, b):
    return a == b or (a is None and b is None)


def _finite(values):
    return all(math.isfinite(v) for v in values if isinstance(v, float))


def make(days, base, record):
    """The DayPatch of a live record's day (days: a DayRows of that day through the record)
    from the rows of the day sent with the record before (base, through prev; None for
    a day's first record), or None if the day does not take the shape of a patch: also if
    the record or the day holds an infinity (SQLite keeps them), which a secondary on MySQL
    stores as NULL, so that its rows never give the primary's (the whole day goes)."""
    if not _finite(record.values()) or not all(
            _finite(row) for _, rows in days.tables.values() for row in rows):
        return None
    if base is None:
        base = summaries.DayRows(days.units, days.version, days.first, days.stop,
                                 {name: (columns, []) for name, (columns, _)
                                  in days.tables.items()})
    if (base.units, base.version, base.first) != (days.units, days.version, days.first):
        return None
    predicted = predict(base, record)
    if set(predicted) != set(days.tables):
        return None
    cells = {}
    for name, (columns, rows) in days.tables.items():
        expected_columns, [guess] = predicted[name]
        if expected_columns != columns or len(rows) != 1:
            return None
        differ = {column: value for column, value, guessed
                  in zip(columns[1:], rows[0][1:], guess[1:]) if not _same(value, guessed)}
        if differ:
            cells[name] = differ
    return summaries.DayPatch(days.units, days.version, days.first,
                              summaries.day_digest(days.tables), cells)


def apply(patch, base, record):
    """The primary's DayRows of the day of a live record (through it) from its patch and
    the rows of that day here before the record (base, a DayRows of the day), or None if
    the result is not the primary's (the digest differs: the rows here were not the
    primary's, or WeeWX's update differs here)."""
    ts = record['dateTime']
    if base is None or patch.first != base.first or patch.first != database.day_start(ts) \
            or (patch.units, patch.version) != (base.units, base.version):
        return None
    tables = predict(base, record)
    for name, changed in patch.cells.items():
        if name not in tables:
            return None
        columns, [row] = tables[name]
        row = list(row)
        for column, value in changed.items():
            if column not in columns[1:]:
                return None
            row[columns.index(column)] = value
        tables[name] = (columns, [tuple(row)])
    if summaries.day_digest(tables) != patch.digest:
        return None
    return summaries.DayRows(patch.units, patch.version, base.first, base.stop, tables, ts)


class Patcher:
    """The responder's side: the DayRows sent with each binding's last live record, so
    that the next record's day can go as a patch of it."""

    def __init__(self):
        self.sent = {}                 # binding key -> DayRows of its last live record

    def patch(self, key, record, prev, days):
        """The DayPatch of days (the DayRows of record's day, through it), or None: no
        summaries, the day before this record was not sent (a restart, a lost read), or a
        shape a patch cannot take. Never raises."""
        base = self.sent.pop(key, None)
        if days is None:
            return None
        self.sent[key] = days
        if (prev or 0) > days.first:   # not the day's first (a day: first < ts <= stop)
            if base is None or base.through != prev or base.first != days.first:
                return None
        else:
            base = None
        try:
            return make(days, base, record)
        except Exception:
            return None
