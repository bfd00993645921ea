"""The station's status file: one JSON file per station, what both roles know (docs/seeing.md).

    <WEEWX_ROOT>/<SQLITE_ROOT>/mqttreplicate-status.json

Each role owns one top-level key ("responder", "requester") and writes it through a
StatusFile: atomically (a temporary file, then os.replace), merged with what the other role
of the station wrote (read-modify-write under a lock: a threading lock for the two roles in
one weewxd, a lock file for the command line beside it), at most every MIN_INTERVAL seconds,
at once when something a reader needs changed, and at least every HEARTBEAT seconds, so
`written` tells a reader the writer is alive. The report, `status --json`, `check` and Home
Assistant's entities read the same facts; the schema is in docs/seeing.md (FORMAT 1: fields
may be added, never renamed).
"""

import fcntl
import json
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

FORMAT = 1
FILENAME = 'mqttreplicate-status.json'
MIN_INTERVAL = 5.0           # seconds between two routine writes
HEARTBEAT = 60.0             # seconds between two writes when nothing changed
MAX_SECONDARIES = 100        # secondaries' statuses kept (a hostile publisher cannot add more)

_locks = {}                  # path -> threading.Lock, shared by the roles of one process
_locks_lock = threading.Lock()

# the replica states, as the status file and the requester's status name them
REPLICA_STATES = {'starting': 'starting', 'asking': 'asking', 'receiving': 'catching up',
                  'live': 'live', 'unanswered': 'unanswered', 'refused': 'refused'}


def status_path(config_dict):
    """Where this station's status file is: beside its SQLite databases (also when they are
    MySQL), in [DatabaseTypes][[SQLite]] SQLITE_ROOT (default `archive`) under WEEWX_ROOT."""
    root = str(config_dict.get('WEEWX_ROOT') or os.getcwd())
    sqlite = (config_dict.get('DatabaseTypes') or {}).get('SQLite') or {}
    return os.path.join(root, str(sqlite.get('SQLITE_ROOT') or 'archive'), FILENAME)


def timezone_name():
    """The local time zone's IANA name (TZ, /etc/timezone, the /etc/localtime link), else
    its abbreviation."""
    tz = os.environ.get('TZ', '').lstrip(':')
    if tz and '/' in tz and not tz.startswith('/'):
        return tz
    try:
        with open('/etc/timezone') as f:
            name = f.read().strip()
            if name:
                return name
    except OSError:
        pass
    try:
        target = os.path.realpath('/etc/localtime')
        if 'zoneinfo/' in target:
            return target.split('zoneinfo/', 1)[1]
    except OSError:
        pass
    return time.tzname[0] or None


def archive_interval(config_dict, default=None):
    """[StdArchive] archive_interval in seconds, or default."""
    try:
        return int(config_dict['StdArchive']['archive_interval'])
    except (KeyError, TypeError, ValueError):
        return default


def station_info(config_dict, interval=None):
    """The file's "station": location, time zone and archive interval."""
    station = config_dict.get('Station') or {}
    location = station.get('location')
    if isinstance(location, list):
        location = ', '.join(location)
    return {'location': location or None, 'timezone': timezone_name(),
            'archive_interval': archive_interval(config_dict, interval)}


def read(path):
    """The status file as a dict, or None if there is none (or it is not one of ours)."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get('format') == FORMAT else None


class StatusFile:
    """Writes one role's key of the station's status file.

        status_file = StatusFile(path, station_info(config_dict), 'requester')
        status_file.offer(section, key)     # every second or so: written when due
        status_file.write(section)          # at once (a stop: state offline)
    """

    def __init__(self, path, station, role):
        self.path = path
        self.station = station
        self.role = role
        self.written = None            # what was last written (content)
        self.key = None
        self.at = 0.0                  # monotonic time of the last write
        self.failed = False
        with _locks_lock:
            self.lock = _locks.setdefault(os.path.abspath(path), threading.Lock())

    def offer(self, section, key=None):
        """Write section if due: key (what a reader needs) changed, the content changed and
        MIN_INTERVAL passed, or HEARTBEAT passed. Never raises."""
        now = time.monotonic()
        if self.written is not None and key == self.key and (
                now - self.at < MIN_INTERVAL
                or (section == self.written and now - self.at < HEARTBEAT)):
            return False
        self.key = key
        return self.write(section)

    def write(self, section):
        """Merge section under our key and replace the file. Never raises: a failure is
        logged once until a write succeeds again."""
        self.at = time.monotonic()
        self.written = section
        try:
            directory = os.path.dirname(self.path)
            os.makedirs(directory, exist_ok=True)
            with self.lock, open(self.path + '.lock', 'a') as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                data = read(self.path) or {}
                merged = {'format': FORMAT, 'written': int(time.time()),
                          'station': self.station,
                          'responder': data.get('responder'),
                          'requester': data.get('requester')}
                merged[self.role] = section
                temporary = '%s.%d.%s.tmp' % (self.path, os.getpid(), self.role)
                with open(temporary, 'w', encoding='utf-8') as f:
                    json.dump(merged, f, sort_keys=True, separators=(',', ':'))
                os.replace(temporary, self.path)
            if self.failed:
                log.info('%s: status file %s written again', self.role, self.path)
            self.failed = False
            return True
        except Exception as e:
            if not self.failed:
                log.warning('%s: cannot write the status file %s: %s: %s', self.role,
                            self.path, type(e).__name__, e)
            self.failed = True
            return False


# --- what the responder learns of its secondaries --------------------------------------------

class Secondaries:
    """The secondaries' own retained statuses, as the responder reads them: their state
    (online, offline since when), and per binding their verification. Any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}       # clientid -> {'state', 'offline_since', 'time', 'bindings'}

    def update(self, clientid, status, retained=False):
        """A requester's status (a dict) arrived; retained: as it was when we subscribed."""
        if not isinstance(status, dict):
            return
        now = int(time.time())
        with self.lock:
            if clientid not in self.seen and len(self.seen) >= MAX_SECONDARIES:
                return
            entry = self.seen.setdefault(clientid, {'state': None, 'offline_since': None,
                                                    'time': None, 'bindings': {},
                                                    'live': None})
            state = status.get('state')
            if state == 'offline':
                if entry['state'] != 'offline':
                    entry['offline_since'] = None if retained else now
            else:
                entry['offline_since'] = None
                entry['time'] = None if retained else now
                live = status.get('live')
                entry['live'] = live if isinstance(live, str) else None
                bindings = status.get('bindings')
                if isinstance(bindings, dict):
                    entry['bindings'] = {k: v for k, v in bindings.items()
                                         if isinstance(v, dict)}
            entry['state'] = state if isinstance(state, str) else None

    def snapshot(self):
        with self.lock:
            return {c: dict(e, bindings=dict(e['bindings'])) for c, e in self.seen.items()}


def _lag_records(lag, interval):
    if lag is None or not interval:
        return None
    return int(lag // interval)


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _last_error(last_error, link, transport):
    """The role's last error: why it cannot reach the broker while it tries, else the last
    warning or error it logged."""
    if link.state == 'connecting' and transport.connect_error:
        return {'time': link.since, 'message': transport.connect_error}
    return last_error.last


def responder_section(responder, link, last_error, interval):
    """The responder's key of the status file. responder: a responder.Responder;
    link: its LinkState; last_error: its LastError; interval: the archive interval."""
    with responder.lock:
        newest = dict(responder.newest)
        nodes = {node: {k: dict(v) for k, v in entry.items()}
                 for node, entry in responder.nodes.items()}
    peers = responder.secondaries.snapshot()
    secondaries = {}
    for clientid in sorted(set(nodes) | set(peers)):
        acks = nodes.get(clientid, {})
        peer = peers.get(clientid) or {}
        own = peer.get('bindings') or {}
        bindings = {}
        for key in sorted(set(acks) | set(k for k in own if k in responder.bindings)):
            ack = acks.get(key) or {}
            mine = own.get(key) or {}
            last = ack.get('last', _int(mine.get('newest')))
            lag = max(newest[key] - last, 0) if newest.get(key) and last is not None \
                else None
            bindings[key] = {'newest': last, 'lag': lag,
                             'lag_records': _lag_records(lag, interval),
                             'last_ack': ack.get('time'),
                             'verified': _int(mine.get('verified')),
                             'verify_result': mine.get('verify_result')}
        contacts = [a.get('time') for a in acks.values() if a.get('time')]
        if peer.get('time'):
            contacts.append(peer['time'])
        if peer.get('state') == 'offline':
            state = 'offline'
        elif own and any(isinstance(v, dict) and v.get('catching_up') for v in own.values()):
            state = 'catching up'
        elif own or bindings:
            behind = [b['lag_records'] for b in bindings.values()
                      if b['lag_records'] is not None]
            state = 'catching up' if behind and max(behind) > 1 else 'live'
        else:
            state = 'unknown'
        secondaries[clientid] = {'state': state, 'offline_since': peer.get('offline_since'),
                                 'last_contact': max(contacts) if contacts else None,
                                 'bindings': bindings}
    from . import VERSION
    return {'state': link.state, 'since': link.since, 'version': VERSION,
            'clientid': responder.conn.clientid,
            'last_error': _last_error(last_error, link, responder.transport),
            'bindings': {k: {'newest': newest.get(k)} for k in sorted(responder.bindings)},
            'secondaries': secondaries}


def requester_section(requester, link, last_error):
    """The requester's key of the status file. requester: a requester.Requester."""
    interval = requester.options.archive_interval
    bindings = {}
    for replica in requester.ordered():
        primary_newest = replica.primary_newest
        lag = max(primary_newest - replica.position, 0) if primary_newest else None
        verifier = replica.verifier
        bindings[replica.key] = {
            'state': REPLICA_STATES.get(replica.state.value, replica.state.value),
            'newest': replica.position or None, 'primary_newest': primary_newest,
            'lag': lag, 'lag_records': _lag_records(lag, interval),
            'last_contact': replica.last_contact,
            'verified': verifier.verified,
            'verify_result': verifier.result,
            'repaired_days': verifier.repaired,
            'repaired_records': verifier.repaired_records,
            'rejected': replica.rejected, 'summaries': replica.sink.summaries}
    from . import VERSION
    return {'state': link.state, 'since': link.since, 'version': VERSION,
            'clientid': requester.conn.clientid,
            'last_error': _last_error(last_error, link, requester.transport),
            'primary': requester.primary_state(), 'bindings': bindings}
