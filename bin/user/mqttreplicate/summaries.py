"""Daily summaries and digests on the wire.

DayRows are the primary's archive_day_* rows of whole days, as they travel with a catch-up
page or a live record; a DayPatch is a live record's summaries as the cells where the
primary's day differs from WeeWX's own update of it (daypatch.py makes and applies it); the
digests of records and of days are what verification compares (SPEC 5.5). Each is checked
here when it is read, once.
"""

import base64
import dataclasses
import hashlib
import json
import math
import zlib
from typing import Optional

from . import protocol
from .protocol import ProtocolError


# ---------------------------------------------------------------------------------------------
#  Digests (SPEC 5.5)
# ---------------------------------------------------------------------------------------------

MIN_BUCKET = 60                   # seconds
MAX_BUCKET = 366 * 86400
MAX_DIGEST_BUCKETS = 1000         # buckets one digest request may span


def _canonical(value, null_inf=False):
    """A value as both sides see it: numbers as floats (SQLite gives 5.0 or 5 for the same
    REAL depending on how it was stored), None as null, anything else as text."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        # null_inf: the requester's database cannot hold an infinity (MySQL), which it
        # stores as NULL: on both sides an infinity counts as NULL
        return None if null_inf and not math.isfinite(value) else value
    return str(value)


def digest_buckets(records, columns, bucket, null_inf=False):
    """[[bucket_start, count, hex sha256], ...] of records, oldest bucket first.

    bucket_start = dateTime - dateTime % bucket; empty buckets are left out. Each record
    restricted to columns (a missing column is null) is hashed as the compact JSON array of
    its canonical values followed by a newline, in dateTime order. A list is sorted here; any
    other iterable must come in dateTime order (so pages can be streamed through)."""
    if isinstance(records, list):
        records = sorted(records, key=lambda r: r['dateTime'])
    result = []
    start = count = sha = None
    for record in records:
        ts = record['dateTime']
        if start is None or ts - ts % bucket != start:
            if start is not None:
                result.append([start, count, sha.hexdigest()])
            start, count, sha = ts - ts % bucket, 0, hashlib.sha256()
        count += 1
        sha.update(json.dumps([_canonical(record.get(c), null_inf) for c in columns],
                              separators=(',', ':')).encode('utf-8') + b'\n')
    if start is not None:
        result.append([start, count, sha.hexdigest()])
    return result


def digest_days(tables, bucket, null_inf=False):
    """{bucket_start: hex sha256} of daily-summary rows: tables is [(type, rows)] in type
    order, each type's rows (dateTime first) in dateTime order. A bucket's digest covers
    the rows whose dateTime (a day's start) is in it: each row hashed as the compact JSON
    array of its type and canonical values followed by a newline, type by type."""
    digests = {}
    for name, rows in tables:
        for row in rows:
            start = row[0] - row[0] % bucket
            sha = digests.get(start)
            if sha is None:
                sha = digests[start] = hashlib.sha256()
            sha.update(json.dumps([name] + [_canonical(v, null_inf) for v in row],
                                  separators=(',', ':')).encode('utf-8') + b'\n')
    return {start: sha.hexdigest() for start, sha in digests.items()}


def fingerprint_range(now, days):
    """(since, until) of the whole UTC days of the last `days` before the day of now: the
    range a responder's fingerprint covers."""
    today = now - now % 86400
    return today - days * 86400 - 1, today - 1


def fingerprint(buckets):
    """A short hash of digest entries (records and daily summaries): what a responder
    publishes of its recent past, so that its secondaries see an edit of it at once."""
    return hashlib.sha256(protocol.encode_json(buckets)).hexdigest()[:16]


def with_day_digests(buckets, days):
    """Digest entries [start, count, hex] extended by the digest of the daily summaries
    of their bucket (digest_days; '' where there are none)."""
    return [entry[:3] + [days.get(entry[0], '')] for entry in buckets]


def differing_buckets(local, remote):
    """Bucket starts whose count or digest differ (or that only one side has), in order."""
    mine = {entry[0]: tuple(entry[1:]) for entry in local}
    theirs = {entry[0]: tuple(entry[1:]) for entry in remote}
    return sorted(start for start in set(mine) | set(theirs)
                  if mine.get(start) != theirs.get(start))


def parse_digest_request(payload):
    """(since, until, bucket, columns, summaries, null_inf) of an op=digest request
    (summaries: the daily summaries' digests too; null_inf: an infinity counts as NULL).
    Raises ProtocolError."""
    request = protocol.decode_payload(payload, None)
    if not isinstance(request, dict):
        raise ProtocolError('digest request is not a JSON object')
    values = [request.get(name) for name in ('since', 'until', 'bucket')]
    if not all(protocol.is_number(v) and isinstance(v, int) and v >= 0 for v in values):
        raise ProtocolError('digest since, until and bucket must be non-negative integers')
    since, until, bucket = values
    if until <= since:
        raise ProtocolError('digest until %d is not after since %d' % (until, since))
    if not MIN_BUCKET <= bucket <= MAX_BUCKET:
        raise ProtocolError('digest bucket %d is not between %d and %d'
                            % (bucket, MIN_BUCKET, MAX_BUCKET))
    if (until - since) // bucket > MAX_DIGEST_BUCKETS:
        raise ProtocolError('digest range spans more than %d buckets' % MAX_DIGEST_BUCKETS)
    columns = request.get('columns')
    if not isinstance(columns, list) or not 0 < len(columns) <= protocol.MAX_RECORD_KEYS:
        raise ProtocolError('digest columns must be a list of 1 to %d names'
                            % protocol.MAX_RECORD_KEYS)
    for name in columns:
        protocol.check_name(name)
    return (since, until, bucket, columns, request.get('summaries') is True,
            request.get('infinity') == 'null')


# ---------------------------------------------------------------------------------------------
#  Daily summaries (the primary's archive_day_* rows of whole days)
# ---------------------------------------------------------------------------------------------

KIND_DAYS = 'days'                 # the `kind` of a page message that carries DayRows
MAX_DAYS_SPAN = 4000 * 86400       # seconds one DayRows may cover
MAX_DAY_COLUMNS = 64               # columns of one archive_day_* table
MAX_DAYS_PROPERTY = 60000          # bytes of the `days` user property of a live record
# On a relay, the attribute of the NEW_ARCHIVE_RECORD event of a replicated record that holds
# the primary's DayRows of its day: its responder sends those on (see MQTTResponder._publish)
PRIMARY_DAYS = 'mqttreplicate_days'


@dataclasses.dataclass(frozen=True)
class DayRows:
    """The daily-summary rows of the local days first <= dateTime < stop as the primary
    holds them: for every observation type it keeps summaries of (even one without rows in
    those days), the table's columns and rows. units and version (the summaries' metadata
    Version) say whether a secondary can store them as they are; through is the newest
    record they include (a live record's) or None (a catch-up page's)."""
    units: int
    version: str
    first: int
    stop: int
    tables: dict               # type -> (columns tuple, [row tuple, ...]) rows by dateTime
    through: Optional[int] = None

    @property
    def types(self):
        return frozenset(self.tables)

    def only(self, first, stop):
        """The same rows restricted to the days first <= dateTime < stop."""
        first, stop = max(first, self.first), min(stop, self.stop)
        return dataclasses.replace(self, first=first, stop=max(first, stop), tables={
            name: (columns, [row for row in rows if first <= row[0] < stop])
            for name, (columns, rows) in self.tables.items()})

    @classmethod
    def merge(cls, parts):
        """One DayRows of the parts of a page, or None if there are none or they do not
        cover one range of days without a gap."""
        ranges = {}                    # (first, stop) -> {type: (columns, rows)}
        for part in parts:             # (a day too big for a message came in parts by type)
            ranges.setdefault((part.first, part.stop), {}).update(part.tables)
        spans = sorted(ranges)
        if not spans or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            return None
        tables = {}
        for span in spans:
            for name, (columns, rows) in ranges[span].items():
                tables.setdefault(name, (columns, []))[1].extend(rows)
        head = min(parts, key=lambda p: p.first)
        return cls(head.units, head.version, spans[0][0], spans[-1][1], tables, head.through)

    def to_json(self):
        return {'units': self.units, 'version': self.version, 'first': self.first,
                'stop': self.stop, 'through': self.through,
                'tables': {name: {'columns': list(columns), 'rows': [list(r) for r in rows]}
                           for name, (columns, rows) in self.tables.items()}}

    @classmethod
    def from_json(cls, obj):
        """Validated DayRows of a decoded JSON object. Raises ProtocolError."""
        if not isinstance(obj, dict):
            raise ProtocolError('daily summaries are a %s, not an object'
                                % type(obj).__name__)
        units, version = obj.get('units'), obj.get('version')
        first, stop, through = obj.get('first'), obj.get('stop'), obj.get('through')
        if units not in protocol.KNOWN_UNIT_SYSTEMS or isinstance(units, bool):
            raise ProtocolError('daily summaries: usUnits %r is not a known unit system'
                                % (units,))
        if not isinstance(version, str) or not 0 < len(version) <= 16:
            raise ProtocolError('daily summaries: version %.20r is not a version' % (version,))
        if not (protocol.plain_int(first) and protocol.plain_int(stop) and first <= stop
                and stop - first <= MAX_DAYS_SPAN):
            raise ProtocolError('daily summaries: days %.20r to %.20r are not a range of days'
                                % (first, stop))
        if through is not None and not protocol.plain_int(through):
            raise ProtocolError('daily summaries: through %.20r is not a time' % (through,))
        tables = obj.get('tables')
        if not isinstance(tables, dict) or len(tables) > protocol.MAX_RECORD_KEYS:
            raise ProtocolError('daily summaries: tables is not an object of at most %d types'
                                % protocol.MAX_RECORD_KEYS)
        result = {}
        for name, table in tables.items():
            protocol.check_name(name)
            columns = table.get('columns') if isinstance(table, dict) else None
            rows = table.get('rows') if isinstance(table, dict) else None
            if not isinstance(columns, list) or not 1 < len(columns) <= MAX_DAY_COLUMNS \
                    or columns[0] != 'dateTime' or not isinstance(rows, list):
                raise ProtocolError('daily summaries of %s: not {"columns": ["dateTime", '
                                    '...], "rows": [...]}' % name)
            for column in columns:
                protocol.check_name(column)
            width = len(columns)
            for row in rows:
                if not isinstance(row, list) or len(row) != width:
                    raise ProtocolError('daily summaries of %s: a row is not %d values'
                                        % (name, width))
                if not protocol.plain_int(row[0]) or not first <= row[0] < stop:
                    raise ProtocolError('daily summaries of %s: day %.20r is not in %d to %d'
                                        % (name, row[0], first, stop))
                for value in row:
                    if value is not None and not protocol.is_value(value):
                        raise ProtocolError('daily summaries of %s: value %.40r is not a '
                                            'number' % (name, value))
            result[name] = (tuple(columns), [tuple(row) for row in rows])
        return cls(units, version, first, stop, result, through)

    # --- on the wire ---

    def encode_property(self):
        """The `days` user property of a live record: base64 of zlib of the JSON, or None
        if it would be larger than MAX_DAYS_PROPERTY (the secondary then updates the day
        itself)."""
        try:
            payload = protocol.encode_json(self.to_json())
        except ValueError:             # a value JSON cannot hold (inf): without them
            return None
        text = base64.b64encode(zlib.compress(payload, 6)).decode('ascii')
        return text if len(text) <= MAX_DAYS_PROPERTY else None

    @classmethod
    def decode_property(cls, text):
        try:
            payload = base64.b64decode(text.encode('ascii'), validate=True)
        except (ValueError, UnicodeEncodeError) as e:
            raise ProtocolError('daily summaries are not base64: %s' % e)
        return cls.from_json(protocol.decode_payload(payload, protocol.ENCODING_ZLIB))

    def split(self, max_bytes, compress):
        """[(payload, encoding)] of these rows, each at most max_bytes: halved by days
        until each part fits, a single day by observation types (merge() puts them back
        together). None if a single type of a single day never fits (the secondary then
        rebuilds the summaries itself)."""
        pending, result = [self], []
        while pending:
            part = pending.pop()
            try:
                payload, encoding = protocol.encode_batch(part.to_json(), compress)
            except ValueError:         # a value JSON cannot hold (inf): without them
                return None
            if len(payload) <= max_bytes:
                result.append((part.first, payload, encoding))
                continue
            days = sorted({row[0] for _, rows in part.tables.values() for row in rows})
            if len(days) > 1:
                middle = days[len(days) // 2]
                pending.append(part.only(middle, part.stop))
                pending.append(part.only(part.first, middle))
                continue
            names = sorted(part.tables)
            if len(names) <= 1:
                return None            # a type of a day that never fits: no days at all
            half = len(names) // 2
            for chosen in (names[half:], names[:half]):
                pending.append(dataclasses.replace(part, tables={
                    name: part.tables[name] for name in chosen}))
        result.sort(key=lambda entry: entry[0])
        return [(payload, encoding) for _, payload, encoding in result]


def day_digest(tables):
    """Hex digest (64 bits) of the rows of a day's daily summaries, tables as in DayRows:
    digest_days' of that one day (its rows share one bucket), types in name order."""
    digests = digest_days(((name, tables[name][1]) for name in sorted(tables)), MAX_BUCKET)
    return next(iter(digests.values()), hashlib.sha256().hexdigest())[:16]


@dataclasses.dataclass(frozen=True)
class DayPatch:
    """The daily summaries of a live record's day, as what differs from WeeWX's own update
    of that day with the record (daypatch.predict) from the rows the primary held through
    the record before it (prev): cells, {type: {column: value}}, mostly LOOP highs and
    lows. first is the day's start; digest (day_digest) is of the day's rows as the
    primary holds them, to check the result against; units and version as in DayRows."""
    units: int
    version: str
    first: int
    digest: str
    cells: dict

    def to_json(self):
        return {'units': self.units, 'version': self.version, 'first': self.first,
                'digest': self.digest, 'cells': self.cells}

    @classmethod
    def from_json(cls, obj):
        """Validated DayPatch of a decoded JSON object. Raises ProtocolError."""
        if not isinstance(obj, dict):
            raise ProtocolError('summaries patch is not an object')
        units, version, first = obj.get('units'), obj.get('version'), obj.get('first')
        digest, cells = obj.get('digest'), obj.get('cells')
        if units not in protocol.KNOWN_UNIT_SYSTEMS or isinstance(units, bool):
            raise ProtocolError('summaries patch: usUnits %r is not a known unit system'
                                % (units,))
        if not isinstance(version, str) or not 0 < len(version) <= 16:
            raise ProtocolError('summaries patch: version %.20r is not a version'
                                % (version,))
        if not protocol.plain_int(first):
            raise ProtocolError('summaries patch: first %.20r is not a time' % (first,))
        if not isinstance(digest, str) or len(digest) != 16 \
                or any(c not in '0123456789abcdef' for c in digest):
            raise ProtocolError('summaries patch: digest %.20r is not 16 hex digits'
                                % (digest,))
        if not isinstance(cells, dict) or len(cells) > protocol.MAX_RECORD_KEYS:
            raise ProtocolError('summaries patch: cells is not an object of at most %d types'
                                % protocol.MAX_RECORD_KEYS)
        for name, columns in cells.items():
            protocol.check_name(name)
            if not isinstance(columns, dict) or len(columns) > MAX_DAY_COLUMNS:
                raise ProtocolError('summaries patch of %s: not {"column": value, ...}' % name)
            for column, value in columns.items():
                protocol.check_name(column)
                if column == 'dateTime' or (value is not None and not protocol.is_value(value)):
                    raise ProtocolError('summaries patch of %s: %s = %.40r is not a value'
                                        % (name, column, value))
        return cls(units, version, first, digest, cells)
