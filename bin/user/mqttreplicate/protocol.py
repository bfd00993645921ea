"""The wire protocol's ground: topics, the checks of records, payloads and their codecs
(JSON, column-major Columns, packed binary columns, compact live records), user properties
and signatures.

Everything that crosses the broker is built and checked in this module, summaries.py (the
daily summaries and the digests) and messages.py (one small frozen class per kind of
message), so the responder and the requester agree by construction. See docs/protocol.md.
"""

import array
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
    if not is_number(interval) or interval <= 0:
        raise ProtocolError('interval %r is not a positive number' % (interval,))
    for key, value in record.items():
        if key not in _GOOD_NAMES:
            check_name(key)
        cls = value.__class__
        # (a float may be infinite, as SQLite stores it: replicated as it is; never NaN)
        if value is not None and ((cls is float and value != value)
                                  or (cls is int and not INT_MIN <= value <= INT_MAX)
                                  or (cls not in _NUMBER_CLASSES and not is_number(value))):
            raise ProtocolError('value of %s is %.40r, not a number' % (key, value))
    return record


_NUMBER_CLASSES = (int, float)
_GOOD_NAMES = set()


def check_name(key):
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH \
            or not key.isascii() or not key.replace('_', 'a').isalnum():
        raise ProtocolError('column name %r is not a plain name' % (key,))
    if len(_GOOD_NAMES) < 10000:
        _GOOD_NAMES.add(key)


INT_MIN, INT_MAX = -2 ** 63, 2 ** 63 - 1     # what a database column holds


def plain_int(value):
    """A non-negative integer a database column holds (not a bool): a timestamp, a count."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT_MAX


def is_number(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    return isinstance(value, float) and math.isfinite(value)


def is_value(value):
    """A value a database column holds: a number, an infinite float included (not NaN)."""
    return is_number(value) or (value.__class__ is float and math.isinf(value))


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
        valid, errors = validated(self.records(), now)
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
            check_name(name)
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
    valid, errors = validated(obj, now)
    return valid, errors, len(obj)


def validated(records, now):
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
