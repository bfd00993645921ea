"""The wire protocol: topics, message properties, record batches and validation.

Everything that crosses the broker is built and checked here, so the responder and the
requester agree by construction. See docs/protocol.md.
"""

import hashlib
import hmac
import json
import math
import struct
import time
import uuid
import zlib

PROTOCOL = '2'
ENCODING_JSON = 'json'
ENCODING_ZLIB = 'zlib+json'

OP_RECORDS = 'records'
OP_DIGEST = 'digest'
OP_ACK = 'ack'
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
        if value is not None and ((cls is float and not math.isfinite(value))
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


def compact(record):
    """A record without its None values (they are NULL on the other side anyway)."""
    return {k: v for k, v in record.items() if v is not None}


# ---------------------------------------------------------------------------------------------
#  Payloads
# ---------------------------------------------------------------------------------------------

def encode_json(obj):
    return json.dumps(obj, separators=(',', ':'), allow_nan=False).encode('utf-8')


def encode_batch(records, compress):
    """Payload and encoding name for a list of records."""
    payload = encode_json(records)
    if compress:
        return zlib.compress(payload, 1), ENCODING_ZLIB
    return payload, ENCODING_JSON


def split_batches(records, batch_size, max_bytes, compress, oversize=None):
    """Encode records into (payload, encoding, count) batches, each at most max_bytes.

    A batch that comes out too big is halved until it fits. A single record that can never
    fit is passed to oversize(record, size) and left out, or raises ProtocolError if oversize
    is None."""
    pending = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    pending.reverse()
    while pending:
        chunk = pending.pop()
        payload, encoding = encode_batch(chunk, compress)
        if len(payload) <= max_bytes:
            yield payload, encoding, len(chunk)
        elif len(chunk) == 1:
            if oversize is None:
                raise ProtocolError('record %s is larger than max_message_bytes (%d bytes)'
                                    % (chunk[0].get('dateTime'), len(payload)))
            oversize(chunk[0], len(payload))
        else:
            half = len(chunk) // 2
            pending.append(chunk[half:])
            pending.append(chunk[:half])


def decode_payload(payload, encoding):
    """Inflate (bounded) and parse a payload. Raises ProtocolError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError('payload of %d bytes is too large' % len(payload))
    if encoding == ENCODING_ZLIB:
        inflater = zlib.decompressobj()
        try:
            payload = inflater.decompress(payload, MAX_INFLATED_BYTES)
        except zlib.error as e:
            raise ProtocolError('payload does not inflate: %s' % e)
        if inflater.unconsumed_tail:
            raise ProtocolError('payload inflates to more than %d bytes' % MAX_INFLATED_BYTES)
    elif encoding not in (None, ENCODING_JSON):
        raise ProtocolError('unknown encoding %r' % encoding)
    try:
        return json.loads(payload.decode('utf-8'))
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


def decode_batch(payload, encoding):
    """(valid records, [error text of each invalid record], number of records sent).

    A page must go on even if one of its records is bad: the bad ones are left out (and
    counted by the caller), the others stored. Raises ProtocolError for a payload that is
    not a list of records at all."""
    obj = decode_payload(payload, encoding)
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise ProtocolError('payload is a %s, not a list of records' % type(obj).__name__)
    now = time.time()
    valid, errors = [], []
    for record in obj:
        try:
            valid.append(validate_record(record, now))
        except ProtocolError as e:
            errors.append(str(e))
    return valid, errors, len(obj)


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


def _canonical(value):
    """A value as both sides see it: numbers as floats (SQLite gives 5.0 or 5 for the same
    REAL depending on how it was stored), None as null, anything else as text."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return str(value)


def digest_buckets(records, columns, bucket):
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
        sha.update(json.dumps([_canonical(record.get(c)) for c in columns],
                              separators=(',', ':')).encode('utf-8') + b'\n')
    if start is not None:
        result.append([start, count, sha.hexdigest()])
    return result


def differing_buckets(local, remote):
    """Bucket starts whose count or digest differ (or that only one side has), in order."""
    mine = {entry[0]: tuple(entry[1:]) for entry in local}
    theirs = {entry[0]: tuple(entry[1:]) for entry in remote}
    return sorted(start for start in set(mine) | set(theirs)
                  if mine.get(start) != theirs.get(start))


def parse_digest_request(payload):
    """(since, until, bucket, columns) of an op=digest request. Raises ProtocolError."""
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
    return since, until, bucket, columns


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
