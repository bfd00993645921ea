"""The messages: one small frozen class per kind.

Each has encode() (to a Wire: payload and user properties, in the order they travel) and
decode() (from an Envelope: what paho received, read once). decode() validates: the rest of
the package never sees a property list or an unchecked payload. See docs/protocol.md.

To add a message kind: a class here with encode() and decode(), a branch in
decode_request() (requests) or in the receiver that expects it (answers), and a round trip
in tests/unit/test_messages.py.
"""

import dataclasses
import time
import zlib
from typing import NamedTuple, Optional

from . import protocol, summaries
from .protocol import ProtocolError


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
        return cls(message.topic, message.payload, protocol.user_properties(properties),
                   getattr(properties, 'CorrelationData', None),
                   getattr(properties, 'ResponseTopic', None),
                   getattr(properties, 'MessageExpiryInterval', None), message)

    @property
    def binding(self):
        return self.props.get('data_binding')

    @property
    def version(self):
        """1 (no `protocol` property: the earlier extension), 2, or None (unknown)."""
        return {None: 1, protocol.PROTOCOL: 2}.get(self.props.get('protocol'))

    @property
    def op(self):
        return self.props.get('op', protocol.OP_RECORDS)

    def number(self, name, default=None, minimum=0):
        return protocol.int_property(self.props, name, default, minimum)

    def check_numbers(self):
        """Refuse a message any of whose numeric properties is not a non-negative integer,
        whether its kind uses that property or not: a peer that sends one is broken."""
        for name in NUMBERS:
            self.number(name)


NUMBERS = ('seq', 'count', 'end', 'more', 'last', 'newest', 'prev')


def _header(binding):
    return [('data_binding', binding), ('protocol', protocol.PROTOCOL)]


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
        props = _header(self.binding) + [('node', self.node), ('op', protocol.OP_RECORDS)]
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
        return cls(envelope.binding, envelope.props.get('node'),
                   protocol.parse_since(envelope.payload),
                   envelope.number('until'), envelope.number('limit', None, 1),
                   envelope.props.get('replace') == '1', version,
                   envelope.number('days') if modern else None,
                   layout if modern and layout in protocol.LAYOUTS else None)


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
        return Wire(protocol.encode_json(request),
                    _header(self.binding) + [('node', self.node), ('op', protocol.OP_DIGEST)])

    @classmethod
    def decode(cls, envelope):
        since, until, bucket, columns, with_days, null_inf = summaries.parse_digest_request(
            envelope.payload)
        return cls(envelope.binding, envelope.props.get('node'), since, until, bucket,
                   tuple(columns), with_days, null_inf)


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
        return Wire(protocol.encode_json({key: {'last': last, 'count': count}
                                          for key, (last, count) in self.entries.items()}),
                    header + [('node', self.node), ('op', protocol.OP_ACK)])

    @classmethod
    def decode(cls, envelope):
        node = envelope.props.get('node')
        acks = protocol.decode_payload(envelope.payload, None)
        if not node or not isinstance(acks, dict):
            raise ProtocolError('ack without node or object payload')
        if len(node) > 200 or any(c in node for c in '/+#'):
            raise ProtocolError('node %.40r is not a client id' % node)
        entries = {}
        for key, value in acks.items():
            count = value.get('count') if isinstance(value, dict) else None
            if not isinstance(value, dict) or not protocol.plain_int(value.get('last')) \
                    or not (count is None or protocol.plain_int(count)):
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
    if op == protocol.OP_ACK:
        return Ack.decode(envelope)
    if op == protocol.OP_RECORDS:
        return RecordsRequest.decode(envelope, version)
    if op == protocol.OP_DIGEST and version == 2:
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
    days: Optional[summaries.DayRows] = None   # a message of daily summaries (no records)

    @property
    def sent(self):
        """Records in the message, good or bad."""
        return len(self.records) + len(self.rejected)

    @classmethod
    def decode(cls, envelope):
        """Bad records are left out and listed in `rejected` (a page goes on without them);
        a message that is not a batch at all raises ProtocolError."""
        envelope.check_numbers()
        if envelope.version == 2 and envelope.props.get('kind') == summaries.KIND_DAYS:
            seq = envelope.number('seq')
            if seq is None or envelope.number('end', 0):
                raise ProtocolError('daily summaries message with seq %s that ends a page'
                                    % seq)
            try:
                days = summaries.DayRows.from_json(protocol.decode_payload(
                    envelope.payload, envelope.props.get('encoding')))
            except ProtocolError as e:
                # the page goes on without them: the secondary rebuilds those days itself
                return cls(envelope.binding, [], seq, rejected=(str(e),))
            return cls(envelope.binding, [], seq, days=days)
        records, rejected, sent = protocol.decode_batch(
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
    days: Optional[summaries.DayRows] = None
    pack: bool = False         # Columns packed where they can be (LAYOUT_PACKED)

    def encode(self, batch_size, max_bytes, compress, oversize=None):
        """[Wire] of the page's batches, each at most max_bytes (see split_batches); an
        empty page is one empty, final message. The daily summaries, if any, travel in
        messages of their own (kind=days) just before the last one, so a page's end
        still comes with its newest record."""
        batches = list(protocol.split_batches(self.records, batch_size, max_bytes, compress,
                                              oversize, self.pack)) if self.records else []
        if not batches:
            batches = [(b'[]', protocol.ENCODING_JSON, 0)]
        days = self.days.split(max_bytes, compress) if self.days is not None else None
        if days:
            batches[-1:-1] = [(payload, encoding, None) for payload, encoding in days]
        columns = isinstance(self.records, protocol.Columns)
        wires = []
        for seq, (payload, encoding, count) in enumerate(batches):
            props = _header(self.binding) + [('encoding', encoding), ('seq', seq),
                                             ('count', count or 0)]
            if count and columns:
                packed = encoding in protocol.PACKED_ENCODINGS
                props.append(('layout', protocol.LAYOUT_PACKED if packed
                              else protocol.LAYOUT_COLUMNS))
            if count is None:
                props.append(('kind', summaries.KIND_DAYS))
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
        payload, encoding = protocol.encode_batch(self.buckets, compress)
        return Wire(payload, _header(self.binding) + [
            ('encoding', encoding), ('seq', 0), ('count', len(self.buckets)), ('end', 1),
            ('more', 0), ('units', self.units or 0)])

    @classmethod
    def decode(cls, envelope):
        if envelope.number('seq', 0) != 0 or not envelope.number('end', 0):
            raise ProtocolError('a digest is not one message')
        buckets = protocol.decode_payload(envelope.payload, envelope.props.get('encoding'))
        if not isinstance(buckets, list):
            raise ProtocolError('the digest is not a list')
        for entry in buckets:
            if not (isinstance(entry, list) and len(entry) in (3, 4)
                    and all(protocol.plain_int(v) for v in entry[:2])
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
    days: Optional[summaries.DayRows] = None
    days_error: Optional[str] = None
    patch: Optional[summaries.DayPatch] = None
    compact: bool = False

    def encode(self):
        props = _header(self.binding) + [('prev', self.prev or 0)]
        days = self.days
        if self.compact:
            obj = {'record': self.record}
            if self.patch is not None:
                obj['patch'] = self.patch.to_json()
                days = None
            deflater = zlib.compressobj(9, zdict=protocol.LIVE_DICTIONARY)
            payload = deflater.compress(protocol.encode_json(obj)) + deflater.flush()
            props.append(('encoding', protocol.ENCODING_LIVE))
        else:
            payload = protocol.encode_json(self.record)
        text = days.encode_property() if days is not None else None
        if text is not None:
            props.append(('days', text))
        return Wire(payload, props)

    @classmethod
    def decode(cls, envelope):
        envelope.check_numbers()
        encoding = envelope.props.get('encoding')
        compact = encoding == protocol.ENCODING_LIVE
        patch = None
        if compact:
            obj = protocol.decode_payload(envelope.payload, encoding)
            if not isinstance(obj, dict) or not isinstance(obj.get('record'), dict):
                raise ProtocolError('compact live record is not {"record": {...}, ...}')
            (records, rejected), sent = protocol.validated([obj['record']], time.time()), 1
            patch = obj.get('patch')
        else:
            records, rejected, sent = protocol.decode_batch(envelope.payload, encoding)
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
        patch = summaries.DayPatch.from_json(obj)
        if not patch.first < ts <= patch.first + summaries.MAX_DAYS_SPAN:
            raise ProtocolError('summaries patch of the day of %s does not go with record %s'
                                % (patch.first, ts))
        return patch

    @staticmethod
    def _days(text, ts):
        if text is None:
            return None
        days = summaries.DayRows.decode_property(text)
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
        return Wire(protocol.encode_json(self.record), [('data_binding', self.binding)])


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
        status = protocol.decode_payload(payload, None)
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
            if isinstance(value, list) and len(value) == 3 and protocol.plain_int(value[0]) \
                    and protocol.plain_int(value[1]) and isinstance(value[2], str) \
                    and len(value[2]) <= 64:
                fingerprints[key] = tuple(value)
        return cls('online', connected if protocol.plain_int(connected) else None,
                   _plain_fields(bindings, 'newest'), _plain_fields(mine, 'last'),
                   fingerprints, status.get('acks') == protocol.ACKS_COMPACT)

    @property
    def online(self):
        return self.state == 'online'


def _plain_fields(entries, name):
    """{key: entries[key][name]} for the values that are plain integers."""
    result = {}
    for key, entry in entries.items():
        value = entry.get(name) if isinstance(entry, dict) else None
        if protocol.plain_int(value):
            result[key] = value
    return result
