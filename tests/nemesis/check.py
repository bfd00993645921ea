"""The nemesis's verdict: every secondary compared with the primary, row by row.

    result = compare(primary, secondary)        # -> Comparison
    result.lost, result.summary_rows, result.examples

The archive and every ``archive_day_*`` table (the metadata table left out) are read in
dateTime order from both databases (SQLite or MariaDB) and compared value by value: numbers
equal within a relative 1e-9, None only with None. Where the secondary is on MySQL/MariaDB,
which cannot hold a non-finite number, a primary's inf or nan must be NULL there (SPEC 2.1).

* lost: the primary's archive records missing on the secondary or different there, plus
  records the secondary has and the primary does not;
* summary_rows: daily-summary rows missing on either side or different.
"""

import collections
import math

from tests.support.station import is_sqlite, open_reader

EXAMPLES = 3                 # differing rows shown per table


class Comparison:
    def __init__(self, name):
        self.name = name
        self.lost = 0
        self.summary_rows = 0
        self.examples = collections.defaultdict(list)   # table -> [line]

    def note(self, table, line):
        if len(self.examples[table]) < EXAMPLES:
            self.examples[table].append(line)


def _same(a, b, nulls_for_non_finite):
    if isinstance(a, float) and not math.isfinite(a):
        if nulls_for_non_finite and b is None:
            return True
        if isinstance(b, float):
            return (math.isnan(a) and math.isnan(b)) or a == b
        return False
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def compare(primary, secondary, binding='wx_binding'):
    """Compare secondary's binding with the primary's; a Comparison."""
    result = Comparison(secondary.name)
    md_a, md_b = primary.manager_dict(binding), secondary.manager_dict(binding)
    nulls = not is_sqlite(md_b)
    with open_reader(md_a) as a, open_reader(md_b) as b:
        if b is None:
            result.lost = len(primary.timestamps(binding))
            result.note('archive', 'no database')
            return result
        table = md_a['table_name']
        result.lost = _table(a, b, table, result, nulls)
        prefix = table + '_day_'
        days = sorted(t for t in set(a.tables()) | set(b.tables())
                      if t.startswith(prefix) and t != prefix + '_metadata')
        for day_table in days:
            result.summary_rows += _table(a, b, day_table, result, nulls)
    return result


def _rows(reader, table, columns):
    try:
        return reader.rows('SELECT %s FROM %s ORDER BY dateTime' % (', '.join(columns), table))
    except reader.errors:
        return iter(())


def _table(a, b, table, result, nulls):
    """Rows of table that differ (or are on one side only)."""
    try:
        cols_a = a.columns(table)
    except a.errors:
        cols_a = []
    try:
        cols_b = b.columns(table)
    except b.errors:
        cols_b = []
    if not cols_a or not cols_b:
        n = a.scalar('SELECT COUNT(*) FROM %s' % table) if cols_a else \
            b.scalar('SELECT COUNT(*) FROM %s' % table)
        if n:
            result.note(table, 'table only on the %s (%d rows)'
                        % ('primary' if cols_a else 'secondary', n))
        return n
    columns = ['dateTime'] + [c for c in cols_a if c in cols_b and c != 'dateTime']
    rows_a, rows_b = _rows(a, table, columns), _rows(b, table, columns)
    row_a, row_b = next(rows_a, None), next(rows_b, None)
    differing = 0
    while row_a is not None or row_b is not None:
        if row_b is None or (row_a is not None and row_a[0] < row_b[0]):
            differing += 1
            result.note(table, '%s only on the primary' % row_a[0])
            row_a = next(rows_a, None)
        elif row_a is None or row_b[0] < row_a[0]:
            differing += 1
            result.note(table, '%s only on the secondary' % row_b[0])
            row_b = next(rows_b, None)
        else:
            wrong = [(col, row_a[i], row_b[i]) for i, col in enumerate(columns)
                     if i and not _same(row_a[i], row_b[i], nulls)]
            if wrong:
                differing += 1
                result.note(table, '%s: %s' % (row_a[0], ', '.join(
                    '%s primary %r secondary %r' % w for w in wrong[:4])))
            row_a, row_b = next(rows_a, None), next(rows_b, None)
    return differing
