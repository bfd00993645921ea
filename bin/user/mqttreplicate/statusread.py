"""Reading the station's status file, mqttreplicate-status.json, into frozen objects.

    path = status_path(config_dict)        # <WEEWX_ROOT>/<SQLITE_ROOT>/mqttreplicate-status.json
    status = read_status(path)             # a Status, or None if there is no file yet

The file is written by the running roles (responder, requester). Readers (the Replication
report) take what they find: a key that is missing or of the wrong type reads as None (or
0 for a counter), a binding or secondary that is not an object is left out. Only a file
that is not JSON, not an object, or too big raises StatusError. Nothing here touches the
broker or a database.
"""

import json
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from . import statusfile

FILE_NAME = statusfile.FILENAME
FORMAT = 1                       # the format this module reads
MAX_BYTES = 4 * 1024 * 1024      # a status file is a few KiB; more is not one


class StatusError(Exception):
    """The status file exists but cannot be read as a status."""


@dataclass(frozen=True)
class LastError:
    time: Optional[float]
    message: str


@dataclass(frozen=True)
class Station:
    location: Optional[str]
    timezone: Optional[str]
    archive_interval: Optional[int]


@dataclass(frozen=True)
class SecondaryBinding:
    """What the primary knows of one binding of one secondary."""
    key: str                          # '<instance>/<binding>'
    newest: Optional[float]
    lag: Optional[float]
    lag_records: Optional[int]
    last_ack: Optional[float]
    verified: Optional[float]
    verify_result: Optional[str]


@dataclass(frozen=True)
class Secondary:
    clientid: str
    state: Optional[str]
    offline_since: Optional[float]
    last_contact: Optional[float]
    bindings: Tuple[SecondaryBinding, ...]


@dataclass(frozen=True)
class Newest:
    key: str
    newest: Optional[float]


@dataclass(frozen=True)
class Responder:
    state: Optional[str]
    since: Optional[float]
    version: Optional[str]
    clientid: Optional[str]
    last_error: Optional[LastError]
    bindings: Tuple[Newest, ...]
    secondaries: Tuple[Secondary, ...]


@dataclass(frozen=True)
class Peer:
    state: Optional[str]
    offline_since: Optional[float]


@dataclass(frozen=True)
class ReplicaBinding:
    """One binding a secondary replicates."""
    key: str
    state: Optional[str]
    newest: Optional[float]
    primary_newest: Optional[float]
    lag: Optional[float]
    lag_records: Optional[int]
    last_contact: Optional[float]
    verified: Optional[float]
    verify_result: Optional[str]
    repaired_days: int
    repaired_records: int
    rejected: int
    summaries: Optional[str]


@dataclass(frozen=True)
class Requester:
    state: Optional[str]
    since: Optional[float]
    version: Optional[str]
    clientid: Optional[str]
    last_error: Optional[LastError]
    primary: Peer
    bindings: Tuple[ReplicaBinding, ...]


@dataclass(frozen=True)
class Status:
    format: Optional[int]
    written: Optional[float]
    station: Station
    responder: Optional[Responder]
    requester: Optional[Requester]


def status_path(config_dict):
    """Where the station's status file is (statusfile.status_path: one rule)."""
    return statusfile.status_path(config_dict)


def read_status(path):
    """The Status in the file at path; None if there is no such file."""
    try:
        with open(path, 'rb') as fd:
            data = fd.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StatusError('cannot read %s: %s' % (path, e.strerror or e)) from None
    if len(data) > MAX_BYTES:
        raise StatusError('%s is larger than %d bytes' % (path, MAX_BYTES))
    try:
        obj = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise StatusError('%s is not JSON: %s' % (path, e)) from None
    if not isinstance(obj, dict):
        raise StatusError('%s holds no JSON object' % path)
    return parse_status(obj)


def parse_status(obj):
    """A Status from the file's decoded JSON object."""
    station = _dict(obj.get('station'))
    return Status(
        format=_int(obj.get('format')),
        written=_ts(obj.get('written')),
        station=Station(location=_str(station.get('location')),
                        timezone=_str(station.get('timezone')),
                        archive_interval=_positive(station.get('archive_interval'))),
        responder=_responder(obj.get('responder')),
        requester=_requester(obj.get('requester')),
    )


def _responder(obj):
    if not isinstance(obj, dict):
        return None
    bindings = tuple(Newest(key, _ts(b.get('newest'))) for key, b in _items(obj.get('bindings')))
    secondaries = tuple(_secondary(clientid, s) for clientid, s in _items(obj.get('secondaries')))
    return Responder(state=_str(obj.get('state')), since=_ts(obj.get('since')),
                     version=_str(obj.get('version')), clientid=_str(obj.get('clientid')),
                     last_error=_last_error(obj.get('last_error')),
                     bindings=bindings, secondaries=secondaries)


def _secondary(clientid, obj):
    bindings = tuple(
        SecondaryBinding(key=key, newest=_ts(b.get('newest')), lag=_number(b.get('lag')),
                         lag_records=_int(b.get('lag_records')),
                         last_ack=_ts(b.get('last_ack')), verified=_ts(b.get('verified')),
                         verify_result=_str(b.get('verify_result')))
        for key, b in _items(obj.get('bindings')))
    return Secondary(clientid=clientid, state=_str(obj.get('state')),
                     offline_since=_ts(obj.get('offline_since')),
                     last_contact=_ts(obj.get('last_contact')), bindings=bindings)


def _requester(obj):
    if not isinstance(obj, dict):
        return None
    primary = _dict(obj.get('primary'))
    bindings = tuple(
        ReplicaBinding(key=key, state=_str(b.get('state')), newest=_ts(b.get('newest')),
                       primary_newest=_ts(b.get('primary_newest')),
                       lag=_number(b.get('lag')), lag_records=_int(b.get('lag_records')),
                       last_contact=_ts(b.get('last_contact')),
                       verified=_ts(b.get('verified')),
                       verify_result=_str(b.get('verify_result')),
                       repaired_days=_count(b.get('repaired_days')),
                       repaired_records=_count(b.get('repaired_records')),
                       rejected=_count(b.get('rejected')),
                       summaries=_str(b.get('summaries')))
        for key, b in _items(obj.get('bindings')))
    return Requester(state=_str(obj.get('state')), since=_ts(obj.get('since')),
                     version=_str(obj.get('version')), clientid=_str(obj.get('clientid')),
                     last_error=_last_error(obj.get('last_error')),
                     primary=Peer(state=_str(primary.get('state')),
                                  offline_since=_ts(primary.get('offline_since'))),
                     bindings=bindings)


def _last_error(obj):
    if not isinstance(obj, dict) or _str(obj.get('message')) is None:
        return None
    return LastError(time=_ts(obj.get('time')), message=_str(obj.get('message')))


# --- values, each None when it is not what it should be ------------------------------------

def _dict(value):
    return value if isinstance(value, dict) else {}


def _items(value):
    """(key, object) of a mapping, sorted by key; entries that are not objects left out."""
    return sorted((str(k), v) for k, v in _dict(value).items() if isinstance(v, dict))


def _str(value):
    return value if isinstance(value, str) else None


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _ts(value):
    value = _number(value)
    return value if value is not None and value > 0 else None


def _int(value):
    value = _number(value)
    return int(value) if value is not None else None


def _positive(value):
    value = _int(value)
    return value if value is not None and value > 0 else None


def _count(value):
    value = _int(value)
    return value if value is not None and value >= 0 else 0
