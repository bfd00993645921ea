"""The wire protocol: topics, messages, record batches and validation.

Everything that crosses the broker is built and checked here, so the responder and the
requester agree by construction. Each kind of message is a small frozen class with
encode() (to a Wire: payload and user properties, in the order they travel) and decode()
(from an Envelope: what paho received, read once). decode() validates: the rest of the
package never sees a property list or an unchecked payload. See docs/protocol.md.

To add a message kind: a class here with encode() and decode(), a branch in
decode_request() (requests) or in the receiver that expects it (answers), and a round trip
in tests/unit/test_messages.py.
"""

import array
import base64
import dataclasses
import hashlib
import hmac
import json
import math
import struct
import sys
import time
import uuid
import zlib
from typing import NamedTuple, Optional

PROTOCOL = '2'
ENCODING_JSON = 'json'
ENCODING_ZLIB = 'zlib+json'
LAYOUT_COLUMNS = 'columns'         # a batch as {"columns": [...], "values": [[...], ...]}
LAYOUT_PACKED = 'packed'           # a batch as binary columns (Columns.pack), else as columns
LAYOUTS = (LAYOUT_COLUMNS, LAYOUT_PACKED)
ENCODING_PACKED = 'packed'         # the payload of a LAYOUT_PACKED batch
ENCODING_ZLIB_PACKED = 'zlib+packed'
PACKED_ENCODINGS = (ENCODING_PACKED, ENCODING_ZLIB_PACKED)
ENCODING_LIVE = 'zlib+live1'      # a compact live record (LiveRecord): see LIVE_DICTIONARY
MAX_COLUMN_CELLS = 2000000         # values one column-major batch may hold

OP_RECORDS = 'records'
OP_DIGEST = 'digest'
OP_ACK = 'ack'
ACKS_COMPACT = 'compact'         # a responder's status: it takes compact acks
LIVE_COMPACT = 'compact'         # a requester's status: it takes compact live records
LIVE_PLAIN = 'plain'             # ... or only plain ones (with whole days)
OPERATIONS = (OP_RECORDS, OP_DIGEST, OP_ACK)

# Largest payload we accept at all, and largest we inflate to (bounded decompression).
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_INFLATED_BYTES = 32 * 1024 * 1024
# Accept records at most this far in the future (clock skew), in seconds.
MAX_FUTURE_SECONDS = 86400
KNOWN_UNIT_SYSTEMS = (0x01, 0x10, 0x11)
MAX_RECORD_KEYS = 1000
MAX_KEY_LENGTH = 64


class ProtocolError(ValueError):
    """A message that does not follow the protocol. The text says what was wrong."""


class SignatureError(ProtocolError):
    """A message without a valid signature (SPEC 5.7). kind is 'missing' or 'wrong'."""

    def __init__(self, kind, text):
        super().__init__(text)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
#  Topics
# ---------------------------------------------------------------------------------------------

def request_topic(prefix, instance):
    return '%s/%s' % (prefix, instance)


def response_topic(prefix, clientid):
    return '%s/%s' % (prefix, clientid)


def archive_topic(prefix, instance):
    return '%s/%s' % (prefix, instance)


def status_topic(prefix, instance, clientid=None):
    topic = '%s/%s' % (prefix, instance)
    return '%s/%s' % (topic, clientid) if clientid else topic


def instance_of(topic, prefix):
    """The instance a topic '{prefix}/{instance}' names, or None."""
    if not topic.startswith(prefix + '/'):
        return None
    rest = topic[len(prefix) + 1:]
    return rest if rest and '/' not in rest else None


def new_correlation():
    return uuid.uuid4().hex.encode('ascii')


# ---------------------------------------------------------------------------------------------
#  Records
# ---------------------------------------------------------------------------------------------

def validate_record(record, now=None):
    """Check a record before anything stores it. Returns the record; raises ProtocolError."""
    if not isinstance(record, dict):
        raise ProtocolError('record is a %s, not an object' % type(record).__name__)
    if len(record) > MAX_RECORD_KEYS:
        raise ProtocolError('record has %d keys' % len(record))
    date_time = record.get('dateTime')
    if isinstance(date_time, float) and date_time.is_integer():
        date_time = record['dateTime'] = int(date_time)
    if not isinstance(date_time, int) or isinstance(date_time, bool) or date_time <= 0:
        raise ProtocolError('dateTime %r is not a positive integer' % (date_time,))
    now = time.time() if now is None else now
    if date_time > now + MAX_FUTURE_SECONDS:
        raise ProtocolError('dateTime %d is more than a day in the future' % date_time)
    units = record.get('usUnits')
    if units not in KNOWN_UNIT_SYSTEMS or isinstance(units, bool):
        raise ProtocolError('usUnits %r is not a known unit system' % (units,))
    interval = record.get('interval')
    if not _is_number(interval) or interval <= 0:
        raise ProtocolError('interval %r is not a positive number' % (interval,))
    for key, value in record.items():
        if key not in _GOOD_NAMES:
            _check_name(key)
        cls = value.__class__
        # (a float may be infinite, as SQLite stores it: replicated as it is; never NaN)
        if value is not None and ((cls is float and value != value)
                                  or (cls is int and not INT_MIN <= value <= INT_MAX)
                                  or (cls not in _NUMBER_CLASSES and not _is_number(value))):
            raise ProtocolError('value of %s is %.40r, not a number' % (key, value))
    return record


_NUMBER_CLASSES = (int, float)
_GOOD_NAMES = set()


def _check_name(key):
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH \
            or not key.isascii() or not key.replace('_', 'a').isalnum():
        raise ProtocolError('column name %r is not a plain name' % (key,))
    if len(_GOOD_NAMES) < 10000:
        _GOOD_NAMES.add(key)


INT_MIN, INT_MAX = -2 ** 63, 2 ** 63 - 1     # what a database column holds


def plain_int(value):
    """A non-negative integer a database column holds (not a bool): a timestamp, a count."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT_MAX


def _is_number(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    return isinstance(value, float) and math.isfinite(value)


def _is_value(value):
    """A value a database column holds: a number, an infinite float included (not NaN)."""
    return _is_number(value) or (value.__class__ is float and math.isinf(value))


def compact(record):
    """A record without its None values (they are NULL on the other side anyway)."""
    return {k: v for k, v in record.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Columns:
    """Records as the database gives them: the column names (dateTime among them) and one
    tuple per record (None for NULL), oldest first. Sliced, it stays Columns; indexed or
    iterated, it gives the records as dicts without their None values. On the wire it is
    column-major, without the columns that hold nothing: JSON (LAYOUT_COLUMNS) or binary
    (LAYOUT_PACKED, see pack())."""
    names: tuple
    rows: list

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Columns(self.names, self.rows[key])
        return {k: v for k, v in zip(self.names, self.rows[key]) if v is not None}

    def __iter__(self):
        return iter(self.records())

    @property
    def first(self):
        return self.rows[0][self.names.index('dateTime')]

    @property
    def last(self):
        return self.rows[-1][self.names.index('dateTime')]

    def column(self, name):
        """The values of one column, one per record (None where it has none); a column
        not named gives None for every record."""
        if name not in self.names:
            return (None,) * len(self.rows)
        i = self.names.index(name)
        return tuple(row[i] for row in self.rows)

    def records(self):
        """The records as dicts, without their None values."""
        names = self.names
        return [{k: v for k, v in zip(names, row) if v is not None} for row in self.rows]

    @classmethod
    def of(cls, records):
        """Columns of records (dicts), naming every key any of them has."""
        names = tuple(dict.fromkeys(k for record in records for k in record))
        return cls(names, [tuple(map(record.get, names)) for record in records])

    def _held(self):
        """[(name, values)] of the columns that hold a value in at least one record."""
        return [(name, column) for name, column in zip(self.names, zip(*self.rows))
                if column.count(None) != len(column)]

    def to_json(self):
        held = self._held()
        return {'columns': [name for name, _ in held], 'values': [values for _, values in held]}

    @classmethod
    def from_json(cls, obj):
        """Columns of a LAYOUT_COLUMNS payload (parsed). Raises ProtocolError."""
        if not isinstance(obj, dict):
            raise ProtocolError('columns payload is a %s, not an object' % type(obj).__name__)
        names, values = obj.get('columns'), obj.get('values')
        if not isinstance(names, list) or not isinstance(values, list) \
                or len(names) != len(values) \
                or not all(isinstance(column, list) for column in values) \
                or len({len(column) for column in values}) > 1:
            raise ProtocolError('columns payload is not {"columns": [names], "values": [one '
                                'list per column, all of the same length]}')
        _check_columns(names, len(values[0]) if values else 0)
        return cls(tuple(names), list(zip(*values)))

    def pack(self):
        """The records as a LAYOUT_PACKED payload (uncompressed), or None if a column holds
        anything but integers (without NULLs) or floats and NULLs: those go as JSON."""
        names, codes, parts = [], [], []
        for name, values in self._held():
            kinds = set(map(type, values))
            if kinds == _INT_ONLY:
                code = 'q'
            elif kinds <= _FLOAT_OR_NULL:
                # A database holds no NaN (SQLite and MySQL store NULL), so NaN is free to
                # stand for NULL here.
                code = 'd'
                if _NONE_TYPE in kinds:
                    values = [_NAN if v is None else v for v in values]
            else:
                return None
            try:
                packed = array.array(code, values)
            except OverflowError:
                return None
            if _BIG_ENDIAN:
                packed.byteswap()
            names.append(name)
            codes.append(code)
            parts.append(packed.tobytes())
        header = encode_json({'columns': names, 'types': ''.join(codes),
                              'rows': len(self.rows)})
        return b''.join([struct.pack('<I', len(header)), header] + parts)

    @classmethod
    def unpack(cls, data):
        """Columns of a LAYOUT_PACKED payload (inflated). Raises ProtocolError."""
        if len(data) < 4:
            raise ProtocolError('packed payload of %d bytes has no header' % len(data))
        (size,) = struct.unpack_from('<I', data)
        header = _parse_json(bytes(data[4:4 + size]))
        names = header.get('columns') if isinstance(header, dict) else None
        codes = header.get('types') if isinstance(header, dict) else None
        rows = header.get('rows') if isinstance(header, dict) else None
        if not isinstance(names, list) or not isinstance(codes, str) \
                or len(codes) != len(names) or not set(codes) <= {'q', 'd'} \
                or not plain_int(rows) or (rows and not names):
            raise ProtocolError('packed payload header is not {"columns": [names], "types": '
                                '"one of q or d per column", "rows": count}')
        _check_columns(names, rows)
        if len(data) != 4 + size + 8 * rows * len(names):
            raise ProtocolError('packed payload of %d bytes does not hold %d rows of %d '
                                'columns' % (len(data), rows, len(names)))
        values, offset = [], 4 + size
        for code in codes:
            column = array.array(code)
            column.frombytes(data[offset:offset + 8 * rows])
            offset += 8 * rows
            if _BIG_ENDIAN:
                column.byteswap()
            column = column.tolist()
            if code == 'd' and math.isnan(sum(column)):      # NULLs (or inf - inf)
                column = [None if v != v else v for v in column]
            values.append(column)
        return cls(tuple(names), list(zip(*values)) if values else [])

    def checked(self, now):
        """(Columns of the valid records, [why each invalid one was left out]). Whole
        columns are checked at once (_columns_valid); only if that finds anything are the
        records checked one by one (validate_record, which says what is wrong)."""
        if _columns_valid(self, now):
            return self, []
        valid, errors = _validated(self.records(), now)
        return Columns(self.names, [tuple(map(r.get, self.names)) for r in valid]), errors


_NONE_TYPE = type(None)
_INT_ONLY = {int}
_FLOAT_ONLY = {float}
_FLOAT_OR_NULL = {float, _NONE_TYPE}
_NUMBER_KINDS = frozenset((int, float))
_VALUE_KINDS = frozenset((int, float, _NONE_TYPE))
_NAN, _INF = math.nan, math.inf
_UNIT_SYSTEMS = frozenset(KNOWN_UNIT_SYSTEMS)
_BIG_ENDIAN = sys.byteorder == 'big'


def _check_columns(names, rows):
    """Refuse the column names and size of a column-major payload (ProtocolError)."""
    if len(names) > MAX_RECORD_KEYS:
        raise ProtocolError('columns payload of %d columns is too wide' % len(names))
    for name in names:
        if not isinstance(name, str) or name not in _GOOD_NAMES:
            _check_name(name)
    if len(set(names)) != len(names):
        raise ProtocolError('columns payload names a column twice')
    if len(names) * rows > MAX_COLUMN_CELLS:
        raise ProtocolError('columns payload of %d values is too large' % (len(names) * rows))


def number_kinds(values, finite=False):
    """The classes of a column's values (a set) if every one is None, an int or a float
    that is not NaN (finite: nor infinite) and none is a bool, else None: checked in C
    loops over the whole column. (A column holding both infinities gives None too.)"""
    kinds = set(map(type, values))
    if not kinds <= _VALUE_KINDS:
        return None
    if float in kinds:
        floats = values if kinds == _FLOAT_ONLY else [v for v in values if v.__class__ is float]
        if math.isnan(sum(floats)) or (finite and (_INF in floats or -_INF in floats)):
            return None
    return kinds


def finite_only(values):
    """Is every float of values finite? (C loops.)"""
    return _INF not in values and -_INF not in values


def _columns_valid(columns, now):
    """True only if every record of columns passes validate_record, checked a whole column
    at a time (C loops instead of a Python loop per value). False does not say a record is
    bad, only that they must be checked one by one: validate_record is the rule, this a
    shortcut that is never less strict (tests/unit/test_protocol_fuzz.py)."""
    names = columns.names
    if not columns.rows or not {'dateTime', 'usUnits', 'interval'} <= set(names):
        return not columns.rows
    for name, values in zip(names, zip(*columns.rows)):
        kinds = number_kinds(values)
        if kinds is None:
            return False
        if int in kinds:
            ints = values if kinds == _INT_ONLY else [v for v in values if v.__class__ is int]
            if min(ints) < INT_MIN or max(ints) > INT_MAX:
                return False
        if name == 'dateTime':
            if kinds != _INT_ONLY or min(values) <= 0 or max(values) > now + MAX_FUTURE_SECONDS:
                return False
        elif name == 'usUnits':
            if kinds != _INT_ONLY or not set(values) <= _UNIT_SYSTEMS:
                return False
        elif name == 'interval':
            if not kinds <= _NUMBER_KINDS or min(values) <= 0 or max(values) == _INF:
                return False
    return True


# ---------------------------------------------------------------------------------------------
#  Payloads
# ---------------------------------------------------------------------------------------------

def encode_json(obj):
    """Compact JSON; an infinite float (SQLite keeps them) as Infinity or -Infinity, which
    _parse_json reads back (NaN is never sent: no database holds it)."""
    return json.dumps(obj, separators=(',', ':')).encode('utf-8')


def encode_batch(records, compress, pack=False):
    """Payload and encoding name for a list of records (or Columns: packed if asked and
    they can be, see Columns.pack)."""
    payload = records.pack() if pack and isinstance(records, Columns) else None
    if payload is not None:
        if compress:
            return zlib.compress(payload, 1), ENCODING_ZLIB_PACKED
        return payload, ENCODING_PACKED
    payload = encode_json(records.to_json() if isinstance(records, Columns) else records)
    if compress:
        return zlib.compress(payload, 1), ENCODING_ZLIB
    return payload, ENCODING_JSON


def split_batches(records, batch_size, max_bytes, compress, oversize=None, pack=False):
    """Encode records (a list, or Columns) into (payload, encoding, count) batches, each
    at most max_bytes.

    A batch that comes out too big is halved until it fits. A single record that can never
    fit is passed to oversize(record, size) and left out, or raises ProtocolError if oversize
    is None."""
    pending = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    pending.reverse()
    while pending:
        chunk = pending.pop()
        payload, encoding = encode_batch(chunk, compress, pack)
        if len(payload) <= max_bytes:
            yield payload, encoding, len(chunk)
        elif len(chunk) == 1:
            record = chunk[0]
            if oversize is None:
                raise ProtocolError('record %s is larger than max_message_bytes (%d bytes)'
                                    % (record.get('dateTime'), len(payload)))
            oversize(record, len(payload))
        else:
            half = len(chunk) // 2
            pending.append(chunk[half:])
            pending.append(chunk[:half])


# The preset dictionary of ENCODING_LIVE (zlib's zdict): the JSON of a compact live record
# begins as this text goes, and its names are WeeWX's (the wview_extended schema of WeeWX 5,
# the summaries' columns), so that a record of 40 values and its patch take some 600 bytes
# instead of 800. Frozen: another dictionary is another encoding.
_LIVE_NAMES = (
    'altimeter appTemp appTemp1 barometer batteryStatus1 batteryStatus2 batteryStatus3 '
    'batteryStatus4 batteryStatus5 batteryStatus6 batteryStatus7 batteryStatus8 cloudbase co '
    'co2 consBatteryVoltage dewpoint dewpoint1 ET extraHumid1 extraHumid2 extraHumid3 '
    'extraHumid4 extraHumid5 extraHumid6 extraHumid7 extraHumid8 extraTemp1 extraTemp2 '
    'extraTemp3 extraTemp4 extraTemp5 extraTemp6 extraTemp7 extraTemp8 forecast hail '
    'hailBatteryStatus hailRate heatindex heatindex1 heatingTemp heatingVoltage humidex '
    'humidex1 illuminance inDewpoint inHumidity inTemp inTempBatteryStatus leafTemp1 '
    'leafTemp2 leafWet1 leafWet2 lightning_distance lightning_disturber_count '
    'lightning_energy lightning_noise_count lightning_strike_count luminosity maxSolarRad nh3 '
    'no2 noise o3 outHumidity outTemp outTempBatteryStatus pb pm10_0 pm1_0 pm2_5 pressure '
    'radiation rain rainBatteryStatus rainRate referenceVoltage rxCheckPercent signal1 '
    'signal2 signal3 signal4 signal5 signal6 signal7 signal8 snow snowBatteryStatus '
    'snowDepth snowMoisture snowRate so2 soilMoist1 soilMoist2 soilMoist3 soilMoist4 '
    'soilTemp1 soilTemp2 soilTemp3 soilTemp4 supplyVoltage txBatteryStatus UV '
    'uvBatteryStatus windBatteryStatus windchill windDir windGust windGustDir windrun '
    'windSpeed').split()
LIVE_DICTIONARY = (
    '{"record":{"dateTime":,"usUnits":1,"interval":5,'
    + ''.join('"%s":' % name for name in _LIVE_NAMES)
    + '},"patch":{"units":1,"version":"4.0","first":,"digest":"","cells":{"wind":{'
    '"max_dir":,"xsum":,"ysum":,"dirsumtime":,"squaresum":,"wsquaresum":,'
    '{"min":,"mintime":,"max":,"maxtime":,"sum":,"count":,"wsum":,"sumtime":}}}').encode()


def inflate(payload, encoding):
    """The bytes of a payload: inflated (bounded) if compressed. Raises ProtocolError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError('payload of %d bytes is too large' % len(payload))
    if encoding in (ENCODING_ZLIB, ENCODING_ZLIB_PACKED, ENCODING_LIVE):
        inflater = zlib.decompressobj(zdict=LIVE_DICTIONARY) if encoding == ENCODING_LIVE \
            else zlib.decompressobj()
        try:
            payload = inflater.decompress(payload, MAX_INFLATED_BYTES)
        except zlib.error as e:
            raise ProtocolError('payload does not inflate: %s' % e)
        if inflater.unconsumed_tail:
            raise ProtocolError('payload inflates to more than %d bytes' % MAX_INFLATED_BYTES)
    elif encoding not in (None, ENCODING_JSON, ENCODING_PACKED):
        raise ProtocolError('unknown encoding %r' % encoding)
    return payload


def decode_payload(payload, encoding):
    """Inflate (bounded) and parse a JSON payload. Raises ProtocolError."""
    if encoding in PACKED_ENCODINGS:
        raise ProtocolError('encoding %r where JSON was expected' % encoding)
    return _parse_json(inflate(payload, encoding))


_CONSTANTS = {'Infinity': math.inf, '-Infinity': -math.inf, 'NaN': 'NaN'}


def _parse_json(data):
    # Infinity and -Infinity are floats; NaN becomes text, which no check takes for a number
    try:
        return json.loads(data.decode('utf-8'), parse_constant=_CONSTANTS.get)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError('payload is not JSON: %s' % e)
    except RecursionError:
        raise ProtocolError('payload is nested too deeply')


def decode_records(payload, encoding):
    """A list of validated records from a batch payload (or a single record); any bad
    record refuses the whole payload."""
    records, errors, _ = decode_batch(payload, encoding)
    if errors:
        raise ProtocolError(errors[0])
    return records


def decode_batch(payload, encoding, layout=None):
    """(valid records, [error text of each invalid record], number of records sent): the
    records a list of dicts, or Columns in a column-major layout.

    A page must go on even if one of its records is bad: the bad ones are left out (and
    counted by the caller), the others stored. Raises ProtocolError for a payload that is
    not a list of records at all (or, column-major, not columns of the same length)."""
    now = time.time()
    if layout == LAYOUT_PACKED and encoding in PACKED_ENCODINGS:
        columns = Columns.unpack(inflate(payload, encoding))
    elif layout in LAYOUTS:
        columns = Columns.from_json(decode_payload(payload, encoding))
    else:
        columns = None
    if columns is not None:
        valid, errors = columns.checked(now)
        return valid, errors, len(columns)
    obj = decode_payload(payload, encoding)
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise ProtocolError('payload is a %s, not a list of records' % type(obj).__name__)
    valid, errors = _validated(obj, now)
    return valid, errors, len(obj)


def _validated(records, now):
    """(the records validate_record keeps, [why each other one was left out])."""
    valid, errors = [], []
    for record in records:
        try:
            valid.append(validate_record(record, now))
        except ProtocolError as e:
            errors.append(str(e))
    return valid, errors


def parse_since(payload):
    """The ASCII integer 'since' of a records request."""
    try:
        text = payload.decode('ascii').strip()
        value = int(float(text)) if text not in ('', 'None', 'null') else 0
    except (UnicodeDecodeError, ValueError, OverflowError):
        raise ProtocolError('since %r is not an integer' % payload[:40])
    if value < 0:
        raise ProtocolError('since %d is negative' % value)
    if value > INT_MAX:
        raise ProtocolError('since %d is out of range' % value)
    return value


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
    return hashlib.sha256(encode_json(buckets)).hexdigest()[:16]


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
    request = decode_payload(payload, None)
    if not isinstance(request, dict):
        raise ProtocolError('digest request is not a JSON object')
    values = [request.get(name) for name in ('since', 'until', 'bucket')]
    if not all(_is_number(v) and isinstance(v, int) and v >= 0 for v in values):
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
    if not isinstance(columns, list) or not 0 < len(columns) <= MAX_RECORD_KEYS:
        raise ProtocolError('digest columns must be a list of 1 to %d names' % MAX_RECORD_KEYS)
    for name in columns:
        _check_name(name)
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
        if units not in KNOWN_UNIT_SYSTEMS or isinstance(units, bool):
            raise ProtocolError('daily summaries: usUnits %r is not a known unit system'
                                % (units,))
        if not isinstance(version, str) or not 0 < len(version) <= 16:
            raise ProtocolError('daily summaries: version %.20r is not a version' % (version,))
        if not (plain_int(first) and plain_int(stop) and first <= stop
                and stop - first <= MAX_DAYS_SPAN):
            raise ProtocolError('daily summaries: days %.20r to %.20r are not a range of days'
                                % (first, stop))
        if through is not None and not plain_int(through):
            raise ProtocolError('daily summaries: through %.20r is not a time' % (through,))
        tables = obj.get('tables')
        if not isinstance(tables, dict) or len(tables) > MAX_RECORD_KEYS:
            raise ProtocolError('daily summaries: tables is not an object of at most %d types'
                                % MAX_RECORD_KEYS)
        result = {}
        for name, table in tables.items():
            _check_name(name)
            columns = table.get('columns') if isinstance(table, dict) else None
            rows = table.get('rows') if isinstance(table, dict) else None
            if not isinstance(columns, list) or not 1 < len(columns) <= MAX_DAY_COLUMNS \
                    or columns[0] != 'dateTime' or not isinstance(rows, list):
                raise ProtocolError('daily summaries of %s: not {"columns": ["dateTime", '
                                    '...], "rows": [...]}' % name)
            for column in columns:
                _check_name(column)
            width = len(columns)
            for row in rows:
                if not isinstance(row, list) or len(row) != width:
                    raise ProtocolError('daily summaries of %s: a row is not %d values'
                                        % (name, width))
                if not plain_int(row[0]) or not first <= row[0] < stop:
                    raise ProtocolError('daily summaries of %s: day %.20r is not in %d to %d'
                                        % (name, row[0], first, stop))
                for value in row:
                    if value is not None and not _is_value(value):
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
            payload = encode_json(self.to_json())
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
        return cls.from_json(decode_payload(payload, ENCODING_ZLIB))

    def split(self, max_bytes, compress):
        """[(payload, encoding)] of these rows, each at most max_bytes: halved by days
        until each part fits, a single day by observation types (merge() puts them back
        together). None if a single type of a single day never fits (the secondary then
        rebuilds the summaries itself)."""
        pending, result = [self], []
        while pending:
            part = pending.pop()
            try:
                payload, encoding = encode_batch(part.to_json(), compress)
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
        if units not in KNOWN_UNIT_SYSTEMS or isinstance(units, bool):
            raise ProtocolError('summaries patch: usUnits %r is not a known unit system'
                                % (units,))
        if not isinstance(version, str) or not 0 < len(version) <= 16:
            raise ProtocolError('summaries patch: version %.20r is not a version'
                                % (version,))
        if not plain_int(first):
            raise ProtocolError('summaries patch: first %.20r is not a time' % (first,))
        if not isinstance(digest, str) or len(digest) != 16 \
                or any(c not in '0123456789abcdef' for c in digest):
            raise ProtocolError('summaries patch: digest %.20r is not 16 hex digits'
                                % (digest,))
        if not isinstance(cells, dict) or len(cells) > MAX_RECORD_KEYS:
            raise ProtocolError('summaries patch: cells is not an object of at most %d types'
                                % MAX_RECORD_KEYS)
        for name, columns in cells.items():
            _check_name(name)
            if not isinstance(columns, dict) or len(columns) > MAX_DAY_COLUMNS:
                raise ProtocolError('summaries patch of %s: not {"column": value, ...}' % name)
            for column, value in columns.items():
                _check_name(column)
                if column == 'dateTime' or (value is not None and not _is_value(value)):
                    raise ProtocolError('summaries patch of %s: %s = %.40r is not a value'
                                        % (name, column, value))
        return cls(units, version, first, digest, cells)


# ---------------------------------------------------------------------------------------------
#  Properties
# ---------------------------------------------------------------------------------------------

def user_properties(properties):
    """The user properties of a paho Properties object, as a dict (first value wins)."""
    result = {}
    pairs = getattr(properties, 'UserProperty', None) or []
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def int_property(props, name, default=None, minimum=0):
    value = props.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ProtocolError('user property %s=%r is not an integer' % (name, value))
    if number < minimum:
        raise ProtocolError('user property %s=%d is less than %d' % (name, number, minimum))
    return number


# ---------------------------------------------------------------------------------------------
#  Signatures (SPEC 5.7)
# ---------------------------------------------------------------------------------------------

SIG = 'sig'                                  # the user property that carries the signature
SIGNATURE_CONTEXT = b'MQTTReplicate-sig-1'   # first part of the signed bytes (domain, version)
_LENGTH = struct.Struct('>I')                # MQTT packets are < 256 MiB: 4 bytes suffice


def _as_bytes(value, what):
    if value is None:
        return b''
    if isinstance(value, str):
        return value.encode('utf-8')
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError('%s must be bytes or str, not %s' % (what, type(value).__name__))


def canonical_form(payload, correlation, user_properties):
    """The bytes a signature covers.

    Parts, in order: SIGNATURE_CONTEXT, the payload, the CorrelationData (empty if none),
    then the name and the value of every user property except sig, in the order they travel
    (MQTT v5 brokers keep that order). Each part is preceded by its length (4 bytes, big
    endian), so no two different messages have the same canonical form: moving bytes from
    one part to the next, or from a name to its value, changes it. The topic is not covered
    (a bridge may remap prefixes); neither are ResponseTopic nor MessageExpiryInterval (a
    broker lowers the expiry in transit)."""
    parts = [SIGNATURE_CONTEXT, _as_bytes(payload, 'payload'),
             _as_bytes(correlation, 'correlation')]
    for name, value in user_properties or ():
        if name == SIG:
            continue
        parts.append(_as_bytes(name, 'user property name'))
        parts.append(_as_bytes(value, 'user property value'))
    return b''.join(_LENGTH.pack(len(part)) + part for part in parts)


def _key(secret):
    if isinstance(secret, str):
        return secret.encode('utf-8')
    return bytes(secret)


def sign(secret, payload, correlation, user_properties):
    """The signature of a message: hex HMAC-SHA256 of canonical_form() with the secret.
    user_properties: (name, value) pairs as str, in the order they are sent."""
    return hmac.new(_key(secret), canonical_form(payload, correlation, user_properties),
                    hashlib.sha256).hexdigest()


def check_signature(secret, payload, correlation, user_properties):
    """Check the sig user property of a received message. Returns nothing if it is valid;
    raises SignatureError ('missing' if there is no sig, 'wrong' if it does not match or
    there are several). The comparison takes the same time wherever the signatures
    differ."""
    pairs = list(user_properties or ())
    sigs = [value for name, value in pairs if name == SIG]
    if not sigs:
        raise SignatureError('missing', 'no signature')
    if len(sigs) > 1:
        raise SignatureError('wrong', '%d signatures' % len(sigs))
    expected = sign(secret, payload, correlation, pairs).encode('ascii')
    # bytes on both sides: compare_digest refuses str with non-ASCII characters
    if not hmac.compare_digest(expected, _as_bytes(sigs[0], 'sig').lower()):
        raise SignatureError('wrong', 'signature does not match')



# ---------------------------------------------------------------------------------------------
#  Messages
# ---------------------------------------------------------------------------------------------

class Wire(NamedTuple):
    """A message ready for Transport.publish(topic, payload, properties, ...)."""
    payload: bytes
    properties: list          # [(name, value)], in the order they travel


@dataclasses.dataclass(frozen=True)
class Envelope:
    """A received message, read once from paho's MQTTMessage: topic, payload and the
    MQTT v5 properties this protocol uses. `message` is kept for the acknowledgement."""
    topic: str
    payload: bytes
    props: dict               # user properties, first value of each name
    correlation: Optional[bytes] = None
    response_topic: Optional[str] = None
    expiry: Optional[int] = None
    message: object = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, message):
        properties = getattr(message, 'properties', None)
        return cls(message.topic, message.payload, user_properties(properties),
                   getattr(properties, 'CorrelationData', None),
                   getattr(properties, 'ResponseTopic', None),
                   getattr(properties, 'MessageExpiryInterval', None), message)

    @property
    def binding(self):
        return self.props.get('data_binding')

    @property
    def version(self):
        """1 (no `protocol` property: the earlier extension), 2, or None (unknown)."""
        return {None: 1, PROTOCOL: 2}.get(self.props.get('protocol'))

    @property
    def op(self):
        return self.props.get('op', OP_RECORDS)

    def number(self, name, default=None, minimum=0):
        return int_property(self.props, name, default, minimum)

    def check_numbers(self):
        """Refuse a message any of whose numeric properties is not a non-negative integer,
        whether its kind uses that property or not: a peer that sends one is broken."""
        for name in NUMBERS:
            self.number(name)


NUMBERS = ('seq', 'count', 'end', 'more', 'last', 'newest', 'prev')


def _header(binding):
    return [('data_binding', binding), ('protocol', PROTOCOL)]


def _flag(value):
    return 1 if value else 0


# --- requests (requester to responder) -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RecordsRequest:
    """Ask for the records with since < dateTime (<= until), at most limit of them."""
    binding: str
    node: Optional[str]
    since: int
    until: Optional[int] = None
    limit: Optional[int] = None
    replace: bool = False      # re-fetching a range to repair it
    version: int = 2           # 1: the earlier extension's request (no page, no end)
    days: Optional[int] = None  # also the daily summaries, from the day of this dateTime
    layout: Optional[str] = None    # LAYOUT_COLUMNS or LAYOUT_PACKED: batches column-major

    def encode(self):
        props = _header(self.binding) + [('node', self.node), ('op', OP_RECORDS)]
        if self.limit is not None:
            props.append(('limit', self.limit))
        if self.until is not None:
            props.append(('until', self.until))
        if self.replace:
            props.append(('replace', 1))
        if self.days is not None:
            props.append(('days', self.days))
        if self.layout is not None:
            props.append(('layout', self.layout))
        return Wire(str(int(self.since)).encode('ascii'), props)

    @classmethod
    def decode(cls, envelope, version):
        modern = version == 2
        layout = envelope.props.get('layout')
        return cls(envelope.binding, envelope.props.get('node'), parse_since(envelope.payload),
                   envelope.number('until'), envelope.number('limit', None, 1),
                   envelope.props.get('replace') == '1', version,
                   envelope.number('days') if modern else None,
                   layout if modern and layout in LAYOUTS else None)


@dataclasses.dataclass(frozen=True)
class DigestRequest:
    """Ask for the digest of since < dateTime <= until in buckets of `bucket` seconds."""
    binding: str
    node: Optional[str]
    since: int
    until: int
    bucket: int
    columns: tuple
    summaries: bool = False    # each bucket's daily summaries too (a 4th entry)
    null_inf: bool = False     # an infinity counts as NULL (the requester cannot hold one)

    def encode(self):
        request = {'since': self.since, 'until': self.until, 'bucket': self.bucket,
                   'columns': list(self.columns)}
        if self.summaries:
            request['summaries'] = True
        if self.null_inf:
            request['infinity'] = 'null'
        return Wire(encode_json(request),
                    _header(self.binding) + [('node', self.node), ('op', OP_DIGEST)])

    @classmethod
    def decode(cls, envelope):
        since, until, bucket, columns, summaries, null_inf = parse_digest_request(
            envelope.payload)
        return cls(envelope.binding, envelope.props.get('node'), since, until, bucket,
                   tuple(columns), summaries, null_inf)


@dataclasses.dataclass(frozen=True)
class Ack:
    """A requester's newest stored record and records stored, per binding key. A compact
    ack (to a responder whose status says `"acks": "compact"`) leaves out the data_binding
    and protocol properties: the payload names the binding."""
    binding: Optional[str]     # None in a compact ack
    node: str
    entries: dict              # binding key -> (last, count or None)

    @property
    def compact(self):
        return self.binding is None

    def encode(self):
        header = [] if self.compact else _header(self.binding)
        return Wire(encode_json({key: {'last': last, 'count': count}
                                 for key, (last, count) in self.entries.items()}),
                    header + [('node', self.node), ('op', OP_ACK)])

    @classmethod
    def decode(cls, envelope):
        node = envelope.props.get('node')
        acks = decode_payload(envelope.payload, None)
        if not node or not isinstance(acks, dict):
            raise ProtocolError('ack without node or object payload')
        if len(node) > 200 or any(c in node for c in '/+#'):
            raise ProtocolError('node %.40r is not a client id' % node)
        entries = {}
        for key, value in acks.items():
            count = value.get('count') if isinstance(value, dict) else None
            if not isinstance(value, dict) or not plain_int(value.get('last')) \
                    or not (count is None or plain_int(count)):
                raise ProtocolError('ack of %s is not {"last": int, "count": int}' % key)
            entries[key] = (value['last'], count)
        return cls(envelope.binding, node, entries)


def decode_request(envelope):
    """The request an envelope on a request topic carries: a RecordsRequest (protocol 1 or
    2), a DigestRequest or an Ack. Raises ProtocolError naming what is wrong."""
    version = envelope.version
    if version is None:
        raise ProtocolError('protocol %r is not supported' % envelope.props.get('protocol'))
    op = envelope.op
    if op == OP_ACK:
        return Ack.decode(envelope)
    if op == OP_RECORDS:
        return RecordsRequest.decode(envelope, version)
    if op == OP_DIGEST and version == 2:
        return DigestRequest.decode(envelope)
    raise ProtocolError('operation %r is not supported' % op)


# --- answers (responder to one requester) ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Batch:
    """One message of a page of records. The last message of a page has end=True and says
    whether there may be more (more), where the page ended (last) and the responder's
    newest record (newest). A protocol-1 answer is a stream of single records without any
    of these (version 1)."""
    binding: str
    records: list
    seq: Optional[int] = 0
    end: bool = False
    more: bool = False
    last: Optional[int] = None
    newest: Optional[int] = None
    rejected: tuple = ()       # why each record left out was left out
    version: int = 2
    days: Optional[DayRows] = None   # a message of daily summaries (no records)

    @property
    def sent(self):
        """Records in the message, good or bad."""
        return len(self.records) + len(self.rejected)

    @classmethod
    def decode(cls, envelope):
        """Bad records are left out and listed in `rejected` (a page goes on without them);
        a message that is not a batch at all raises ProtocolError."""
        envelope.check_numbers()
        if envelope.version == 2 and envelope.props.get('kind') == KIND_DAYS:
            seq = envelope.number('seq')
            if seq is None or envelope.number('end', 0):
                raise ProtocolError('daily summaries message with seq %s that ends a page'
                                    % seq)
            try:
                days = DayRows.from_json(decode_payload(envelope.payload,
                                                        envelope.props.get('encoding')))
            except ProtocolError as e:
                # the page goes on without them: the secondary rebuilds those days itself
                return cls(envelope.binding, [], seq, rejected=(str(e),))
            return cls(envelope.binding, [], seq, days=days)
        records, rejected, sent = decode_batch(
            envelope.payload, envelope.props.get('encoding'),
            envelope.props.get('layout') if envelope.version == 2 else None)
        if envelope.version != 2:
            return cls(envelope.binding, records, None, rejected=tuple(rejected), version=1)
        seq, count = envelope.number('seq'), envelope.number('count')
        if seq is None or (count is not None and count != sent):
            raise ProtocolError('page message with seq %s, count %s and %d records'
                                % (seq, count, sent))
        end = bool(envelope.number('end', 0))
        return cls(envelope.binding, records, seq, end, end and bool(envelope.number('more', 0)),
                   envelope.number('last') if end else None,
                   envelope.number('newest') if end else None, tuple(rejected))


@dataclasses.dataclass(frozen=True)
class Page:
    """A page of records as the responder sends it: one or more Batch messages."""
    binding: str
    records: list              # dicts, or Columns (sent column-major)
    more: bool
    last: int
    newest: Optional[int]
    days: Optional[DayRows] = None
    pack: bool = False         # Columns packed where they can be (LAYOUT_PACKED)

    def encode(self, batch_size, max_bytes, compress, oversize=None):
        """[Wire] of the page's batches, each at most max_bytes (see split_batches); an
        empty page is one empty, final message. The daily summaries, if any, travel in
        messages of their own (kind=days) just before the last one, so a page's end
        still comes with its newest record."""
        batches = list(split_batches(self.records, batch_size, max_bytes, compress, oversize,
                                     self.pack)) if self.records else []
        if not batches:
            batches = [(b'[]', ENCODING_JSON, 0)]
        days = self.days.split(max_bytes, compress) if self.days is not None else None
        if days:
            batches[-1:-1] = [(payload, encoding, None) for payload, encoding in days]
        columns = isinstance(self.records, Columns)
        wires = []
        for seq, (payload, encoding, count) in enumerate(batches):
            props = _header(self.binding) + [('encoding', encoding), ('seq', seq),
                                             ('count', count or 0)]
            if count and columns:
                props.append(('layout', LAYOUT_PACKED if encoding in PACKED_ENCODINGS
                              else LAYOUT_COLUMNS))
            if count is None:
                props.append(('kind', KIND_DAYS))
            elif seq == len(batches) - 1:
                props += [('end', 1), ('more', _flag(self.more)), ('last', self.last),
                          ('newest', self.newest or 0)]
            wires.append(Wire(payload, props))
        return wires


@dataclasses.dataclass(frozen=True)
class DigestReply:
    """The digest of a range (SPEC 5.5) and the primary's unit system: one message."""
    binding: str
    buckets: list              # [[bucket start, count, hex sha256(, summaries' hex)], ...]
    units: Optional[int] = None

    def encode(self, compress):
        payload, encoding = encode_batch(self.buckets, compress)
        return Wire(payload, _header(self.binding) + [
            ('encoding', encoding), ('seq', 0), ('count', len(self.buckets)), ('end', 1),
            ('more', 0), ('units', self.units or 0)])

    @classmethod
    def decode(cls, envelope):
        if envelope.number('seq', 0) != 0 or not envelope.number('end', 0):
            raise ProtocolError('a digest is not one message')
        buckets = decode_payload(envelope.payload, envelope.props.get('encoding'))
        if not isinstance(buckets, list):
            raise ProtocolError('the digest is not a list')
        for entry in buckets:
            if not (isinstance(entry, list) and len(entry) in (3, 4)
                    and all(plain_int(v) for v in entry[:2])
                    and all(isinstance(v, str) for v in entry[2:])):
                raise ProtocolError('digest entry %.60r is not [bucket start, count, digest'
                                    '(, digest of the summaries)]' % (entry,))
        return cls(envelope.binding, buckets, envelope.number('units') or None)


@dataclasses.dataclass(frozen=True)
class ErrorReply:
    """The responder refuses a request (an unknown binding): an empty, final page with the
    reason, so the requester does not wait for the page timeout."""
    binding: str
    error: str

    def encode(self):
        return Wire(b'[]', _header(self.binding) + [
            ('seq', 0), ('count', 0), ('end', 1), ('more', 0), ('error', self.error)])


def decode_answer(envelope, kind=Batch):
    """A message on our response topic: an ErrorReply if it carries an error, else a
    `kind` (Batch or DigestReply). Raises ProtocolError."""
    error = envelope.props.get('error')
    if error is not None and envelope.version == 2:
        return ErrorReply(envelope.binding, error)
    return kind.decode(envelope)


# --- live records and the earlier protocol -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LiveRecord:
    """A new archive record of the primary, with the dateTime of the one before it there
    (prev; None from a protocol-1 responder, which does not say) and the primary's daily
    summaries of its day right after it was stored: whole (days) or as a DayPatch (patch),
    or neither (not sent). Bad daily summaries do not refuse the record: they are left
    out, and why is in days_error.

    compact: the record and its patch as one JSON object {"record": ..., "patch": ...}
    deflated with LIVE_DICTIONARY (ENCODING_LIVE), for requesters that say they take it;
    else the record as a plain JSON object (what a protocol-1 requester reads) and the
    whole day in the `days` property."""
    binding: str
    record: dict
    prev: Optional[int] = 0
    days: Optional[DayRows] = None
    days_error: Optional[str] = None
    patch: Optional[DayPatch] = None
    compact: bool = False

    def encode(self):
        props = _header(self.binding) + [('prev', self.prev or 0)]
        days = self.days
        if self.compact:
            obj = {'record': self.record}
            if self.patch is not None:
                obj['patch'] = self.patch.to_json()
                days = None
            deflater = zlib.compressobj(9, zdict=LIVE_DICTIONARY)
            payload = deflater.compress(encode_json(obj)) + deflater.flush()
            props.append(('encoding', ENCODING_LIVE))
        else:
            payload = encode_json(self.record)
        text = days.encode_property() if days is not None else None
        if text is not None:
            props.append(('days', text))
        return Wire(payload, props)

    @classmethod
    def decode(cls, envelope):
        envelope.check_numbers()
        encoding = envelope.props.get('encoding')
        compact = encoding == ENCODING_LIVE
        patch = None
        if compact:
            obj = decode_payload(envelope.payload, encoding)
            if not isinstance(obj, dict) or not isinstance(obj.get('record'), dict):
                raise ProtocolError('compact live record is not {"record": {...}, ...}')
            (records, rejected), sent = _validated([obj['record']], time.time()), 1
            patch = obj.get('patch')
        else:
            records, rejected, sent = decode_batch(envelope.payload, encoding)
        if rejected:
            raise ProtocolError(rejected[0])
        if sent != 1:
            raise ProtocolError('live message with %d records' % sent)
        record = records[0]
        days = error = None
        if envelope.version == 2:
            try:
                if patch is not None:
                    patch = cls._patch(patch, record['dateTime'])
                days = cls._days(envelope.props.get('days'), record['dateTime'])
            except ProtocolError as e:
                patch, error = None, str(e)
        else:
            patch = None
        return cls(envelope.binding, record, envelope.number('prev'), days, error, patch,
                   compact)

    @staticmethod
    def _patch(obj, ts):
        patch = DayPatch.from_json(obj)
        if not patch.first < ts <= patch.first + MAX_DAYS_SPAN:
            raise ProtocolError('summaries patch of the day of %s does not go with record %s'
                                % (patch.first, ts))
        return patch

    @staticmethod
    def _days(text, ts):
        if text is None:
            return None
        days = DayRows.decode_property(text)
        if days.through != ts or not days.first < ts <= days.stop:
            raise ProtocolError('daily summaries of %s to %s through %s do not go with '
                                'record %s' % (days.first, days.stop, days.through, ts))
        return days


@dataclasses.dataclass(frozen=True)
class LegacyRecord:
    """One record of an answer to a protocol-1 request: what the earlier extension's
    requester understands (no protocol, no page, no end)."""
    binding: str
    record: dict

    def encode(self):
        return Wire(encode_json(self.record), [('data_binding', self.binding)])


# --- status ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ResponderStatus:
    """What a requester reads from a responder's retained status: whether it is online, when
    its connection began, its newest record per binding and what it knows of us."""
    state: Optional[str]       # 'online', 'offline' (its will, or it stopped), or unknown
    connected: Optional[int] = None
    newest: dict = dataclasses.field(default_factory=dict)        # binding key -> dateTime
    acknowledged: dict = dataclasses.field(default_factory=dict)  # binding key -> our last
    # binding key -> (since, until, hex): the fingerprint of its whole past days (see
    # fingerprint()); a change for the same range is an edit of the primary's past
    fingerprints: dict = dataclasses.field(default_factory=dict)
    compact_acks: bool = False  # it takes acks without data_binding and protocol

    @classmethod
    def decode(cls, payload, clientid):
        """Raises ProtocolError for a status that is not an object of the expected shape;
        fields that are not plain integers are left out (a status is not trusted)."""
        status = decode_payload(payload, None)
        if not isinstance(status, dict):
            raise ProtocolError('status is a %s, not an object' % type(status).__name__)
        if status.get('state') != 'online':
            return cls(status.get('state') if isinstance(status.get('state'), str) else None)
        bindings = status.get('bindings') or {}
        nodes = status.get('nodes') or {}
        mine = (nodes.get(clientid) or {}) if isinstance(nodes, dict) else {}
        if not isinstance(bindings, dict) or not isinstance(mine, dict):
            raise ProtocolError('bindings or nodes is not an object')
        connected = status.get('connected')
        fingerprints = {}
        for key, entry in bindings.items():
            value = entry.get('fingerprint') if isinstance(entry, dict) else None
            if isinstance(value, list) and len(value) == 3 and plain_int(value[0]) \
                    and plain_int(value[1]) and isinstance(value[2], str) \
                    and len(value[2]) <= 64:
                fingerprints[key] = tuple(value)
        return cls('online', connected if plain_int(connected) else None,
                   _plain_fields(bindings, 'newest'), _plain_fields(mine, 'last'),
                   fingerprints, status.get('acks') == ACKS_COMPACT)

    @property
    def online(self):
        return self.state == 'online'


def _plain_fields(entries, name):
    """{key: entries[key][name]} for the values that are plain integers."""
    result = {}
    for key, entry in entries.items():
        value = entry.get(name) if isinstance(entry, dict) else None
        if plain_int(value):
            result[key] = value
    return result
