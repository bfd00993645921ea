"""The Replication report's search list extension: $replication, read from the status file.

The skin (skins/Replication) names it in its skin.conf:

    [CheetahGenerator]
        search_list_extensions = user.mqttreplicate.report.ReplicationStatus

Everything the template shows comes from the station's status file (statusread), read once
per generation: never the broker, never a database, so the report costs the report cycle
one small file read. Every text is HTML-escaped here and every time is formatted here, in
the station's local time with its zone (in tables as a <time> element), so the template
only places strings.
"""

import datetime
import html
import logging
import time
from types import SimpleNamespace

from weewx.cheetahgenerator import SearchList

from . import statusread

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300          # seconds, WeeWX's default archive interval
# A status file not written for this many archive intervals, and at least this many
# seconds, is old (its writers write it at least once a minute): as `check` judges it.
OLD_INTERVALS = 3
OLD_MIN = 180
NONE = '\u2014'                 # an em dash: no value

GOOD = {'live', 'online', 'in sync', 'copied'}
BUSY = {'catching up', 'asking', 'starting', 'connecting', 'repaired', 'rebuilt'}
BAD = {'offline', 'unanswered', 'refused', 'differs', 'failed', 'unknown'}


class ReplicationStatus(SearchList):
    """Provides $replication to the Replication skin's templates."""

    def get_extension_list(self, timespan, db_lookup):
        config_dict = self.generator.config_dict
        path = statusread.status_path(config_dict)
        try:
            view = build_view(path, config_dict, time.time())
        except Exception as e:           # the page must still be written
            log.error("report: cannot show the replication status from %s: %s: %s",
                      path, type(e).__name__, e)
            view = empty_view(config_dict, time.time(), None,
                              'The replication status could not be shown: %s.' % e)
        return [{'replication': view}]


def build_view(path, config_dict, now):
    """$replication for the status file at path, as the page generated at now shows it."""
    try:
        status = statusread.read_status(path)
    except statusread.StatusError as e:
        return empty_view(config_dict, now, None, 'The status file cannot be read: %s.' % e)
    if status is None:
        return empty_view(config_dict, now, None,
                          'No replication status yet: %s does not exist. It is written by '
                          'the responder and the requester while they run.' % path)
    if status.responder is None and status.requester is None:
        return empty_view(config_dict, now, status,
                          'No replication status yet: neither role of MQTTReplicate is '
                          'running on this station.')
    clock = Clock(status.station.timezone, now)
    view = _page(config_dict, now, status, clock)
    view.available = True
    view.primary = _primary(status.responder, clock) if status.responder else None
    view.secondary = _secondary(status.requester, clock) if status.requester else None
    view.roles = ' and '.join('a ' + role for role, there in (('primary', view.primary),
                                                              ('secondary', view.secondary))
                              if there)
    return view


def empty_view(config_dict, now, status, message):
    """The page without a status: the reason, in message."""
    clock = Clock(status.station.timezone if status else None, now)
    view = _page(config_dict, now, status, clock)
    view.available = False
    view.message = _esc(message)
    return view


def _page(config_dict, now, status, clock):
    interval = (status.station.archive_interval if status else None) \
        or _config_interval(config_dict) or DEFAULT_INTERVAL
    view = SimpleNamespace(available=False, message='', primary=None, secondary=None,
                           roles='')
    view.generated = clock.text(now)
    view.generated_iso = clock.iso(now)
    view.generated_ts = int(now)
    view.refresh = max(interval, 60)       # seconds: a browser loads the page again
    view.stale_after = 2 * interval
    view.stale_after_text = duration(2 * interval)
    view.zone = _esc(clock.zone)
    location = status.station.location if status else None
    if location is None:
        location = _location(config_dict)
    view.location = _esc(location or '')
    written = status.written if status else None
    view.written = clock.text(written)
    view.written_old = written is not None \
        and now - written > max(OLD_INTERVALS * interval, OLD_MIN)
    view.written_age = duration(now - written) if written is not None else NONE
    return view


def _primary(responder, clock):
    view = _role(responder, clock)
    view.bindings = [SimpleNamespace(key=_esc(b.key), newest=clock.when(b.newest))
                     for b in responder.bindings]
    view.secondaries = []
    for sec in responder.secondaries:
        rows = [SimpleNamespace(key=_esc(b.key), newest=clock.when(b.newest),
                                lag=lag(b.lag, b.lag_records), last_ack=clock.when(b.last_ack),
                                verified=clock.when(b.verified),
                                verify_result=_esc(b.verify_result or ''),
                                verify_class=state_class(b.verify_result))
                for b in sec.bindings]
        view.secondaries.append(SimpleNamespace(
            clientid=_esc(sec.clientid), state=_esc(sec.state or 'unknown'),
            state_class=state_class(sec.state or 'unknown'),
            offline_since=clock.when(sec.offline_since) if sec.offline_since else '',
            last_contact=clock.when(sec.last_contact), bindings=rows))
    return view


def _secondary(requester, clock):
    view = _role(requester, clock)
    primary = requester.primary
    view.primary_state = _esc(primary.state or 'unknown')
    view.primary_class = state_class(primary.state or 'unknown')
    view.primary_offline_since = clock.when(primary.offline_since) \
        if primary.offline_since else ''
    view.bindings = [
        SimpleNamespace(key=_esc(b.key), state=_esc(b.state or 'unknown'),
                        state_class=state_class(b.state or 'unknown'),
                        newest=clock.when(b.newest), primary_newest=clock.when(b.primary_newest),
                        lag=lag(b.lag, b.lag_records), last_contact=clock.when(b.last_contact),
                        verified=clock.when(b.verified),
                        verify_result=_esc(b.verify_result or ''),
                        verify_class=state_class(b.verify_result),
                        repaired=repairs(b.repaired_days, b.repaired_records),
                        rejected=str(b.rejected), rejected_class='bad' if b.rejected else '',
                        summaries=_esc(b.summaries or NONE))
        for b in requester.bindings]
    return view


def _role(role, clock):
    """What the responder and the requester have alike."""
    error = role.last_error
    return SimpleNamespace(
        state=_esc(role.state or 'unknown'), state_class=state_class(role.state or 'unknown'),
        since=clock.when(role.since), version=_esc(role.version or NONE),
        clientid=_esc(role.clientid or NONE),
        error=_esc(error.message) if error else '',
        error_time=clock.when(error.time) if error else '')


# --- formatting ------------------------------------------------------------------------------

class Clock:
    """Formats times in the station's local time, with the zone's abbreviation.

    Local time is this process's (weewxd's, the station's), as in the station's other
    reports. The status file's zone name labels it where it is the same zone (the same
    offsets from UTC in winter and summer); else the label is the zone's abbreviation.
    """

    def __init__(self, timezone=None, now=None):
        self.zone = timezone if timezone and _same_zone(timezone, now or time.time()) \
            else (time.strftime('%Z') or 'local time')

    def text(self, ts):
        """'2026-12-07 00:18:24 CET', or a dash."""
        if ts is None:
            return NONE
        try:
            return datetime.datetime.fromtimestamp(ts).astimezone().strftime(
                '%Y-%m-%d %H:%M:%S %Z')
        except (OverflowError, OSError, ValueError):
            return NONE

    def when(self, ts):
        """The same as HTML: a <time> whose date and time each stay on one line."""
        text = self.text(ts)
        if text == NONE:
            return NONE
        day, rest = text.split(' ', 1)
        return '<time datetime="%s"><span>%s</span> <span>%s</span></time>' \
            % (self.iso(ts), _esc(day), _esc(rest))

    def iso(self, ts):
        try:
            return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(
                timespec='seconds')
        except (OverflowError, OSError, ValueError):
            return ''


def _same_zone(name, now):
    """True if the IANA zone name keeps the local time's offsets from UTC, now and half a
    year away (where Python knows the name)."""
    try:
        import zoneinfo
        zone = zoneinfo.ZoneInfo(name)
    except Exception:        # not an IANA name, no tz database, Python < 3.9
        return False
    for ts in (now, now + 182 * 86400):
        local = datetime.datetime.fromtimestamp(ts).astimezone()
        if datetime.datetime.fromtimestamp(ts, zone).utcoffset() != local.utcoffset():
            return False
    return True


def duration(seconds):
    """'0 s', '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    if seconds is None:
        return NONE
    seconds = int(round(max(0, seconds)))
    if seconds < 60:
        return '%d s' % seconds
    minutes = seconds // 60
    if minutes < 60:
        return '%d min' % minutes
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return '%d h %d min' % (hours, minutes) if minutes else '%d h' % hours
    days, hours = divmod(hours, 24)
    return '%d d %d h' % (days, hours) if hours else '%d d' % days


def lag(seconds, records):
    """The lag behind the primary, in time and, where known, records."""
    if seconds is None:
        return NONE
    text = duration(seconds)
    if records is not None:
        text += ' (%d record%s)' % (records, '' if records == 1 else 's')
    return text


def repairs(days, records):
    if not days and not records:
        return 'none'
    return '%d day%s, %d record%s' % (days, '' if days == 1 else 's',
                                      records, '' if records == 1 else 's')


def state_class(state):
    """The CSS class of a state or a verification result: good, busy, bad or ''."""
    if state in GOOD:
        return 'good'
    if state in BUSY:
        return 'busy'
    if state in BAD:
        return 'bad'
    return ''


def _esc(text):
    return html.escape(str(text), quote=True)


def _config_interval(config_dict):
    try:
        return int(config_dict.get('StdArchive', {}).get('archive_interval'))
    except (TypeError, ValueError):
        return None


def _location(config_dict):
    station = config_dict.get('Station', {})
    location = station.get('location') if isinstance(station, dict) else None
    if isinstance(location, (list, tuple)):       # configobj splits at commas
        location = ', '.join(location)
    return location
