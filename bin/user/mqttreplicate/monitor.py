"""The `check` command's judgement: the station's status file read as a monitoring plugin.

    code, line = judge(statusfile.read(path), warn=2, crit=6)
    print(line); sys.exit(code)

One line in the Nagios plugin convention, `REPLICATION <STATE> - <what> | <perfdata>`, and
the exit code 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (docs/seeing.md). Thresholds are in
archive intervals of lag. What cannot be known (no status file, a file nobody has written
for a while, a role not connected to its broker, no secondary seen) is UNKNOWN; a refusal
or a stopped role is CRITICAL; an offline peer, a catch-up nobody answered or a
verification that found differences is a WARNING.
"""

import re
import time

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: 'OK', WARNING: 'WARNING', CRITICAL: 'CRITICAL', UNKNOWN: 'UNKNOWN'}
DEFAULT_WARN = 2           # archive intervals behind
DEFAULT_CRIT = 6
STALE_INTERVALS = 3        # a file not written for this many archive intervals (at least
STALE_MIN = 180            # STALE_MIN seconds: the writers write every minute) is stale


class Findings:
    """What the check found: the worst state, the lines that explain it, the perfdata."""

    def __init__(self):
        self.items = []            # (state, text)
        self.perf = []             # (label, lag, warn, crit)

    def add(self, state, text):
        self.items.append((state, text))

    @property
    def worst(self):
        states = [s for s, _ in self.items]
        return max(states, key=lambda s: (s != OK, s != UNKNOWN, s)) if states else UNKNOWN

    def line(self):
        worst = self.worst
        texts = [t for s, t in self.items if s == worst] or ['no status seen']
        text = '; '.join(texts[:3]) + ('; and %d more' % (len(texts) - 3)
                                       if len(texts) > 3 else '')
        line = 'REPLICATION %s - %s' % (NAMES[worst], text)
        if self.perf:
            single = len(self.perf) == 1
            line += ' | ' + ' '.join(
                '%s=%ds;%d;%d' % ('lag' if single else label, lag, warn, crit)
                for label, lag, warn, crit in self.perf)
        return line


def _label(*parts):
    return 'lag_' + re.sub(r'[^A-Za-z0-9_.-]', '_', '_'.join(parts))


def _lag(findings, label, where, lag, interval, warn, crit):
    """Judge one lag (seconds, or None) against the thresholds (intervals)."""
    if lag is None:
        return
    behind = int(lag // interval)
    findings.perf.append((label, lag, warn * interval, crit * interval))
    text = '%s %d interval%s behind' % (where, behind, '' if behind == 1 else 's')
    if behind >= crit:
        findings.add(CRITICAL, text)
    elif behind >= warn:
        findings.add(WARNING, text)
    else:
        findings.add(OK, text if behind else '%s live' % where)


def _role_state(findings, role, section):
    """False if the role cannot be judged further."""
    state = section.get('state')
    if state == 'offline':
        findings.add(CRITICAL, '%s stopped' % role)
        return False
    if state != 'online':
        error = section.get('last_error') or {}
        findings.add(UNKNOWN, '%s not connected to the broker%s' % (
            role, ': %s' % error['message'] if error.get('message') else ''))
        return False
    return True


def _requester(findings, section, interval, warn, crit):
    if not _role_state(findings, 'requester', section):
        return
    primary = section.get('primary') or {}
    if primary.get('state') == 'offline':
        findings.add(WARNING, 'primary offline')
    for key, binding in sorted((section.get('bindings') or {}).items()):
        state = binding.get('state')
        if state == 'refused':
            findings.add(CRITICAL, '%s refused by the responder' % key)
            continue
        if state == 'unanswered':
            findings.add(WARNING, '%s: no answer from the responder' % key)
        elif state in ('starting', 'asking'):
            findings.add(UNKNOWN, '%s waiting for the responder' % key)
        if binding.get('verify_result') in ('differs', 'failed'):
            findings.add(WARNING, '%s verification %s' % (key, binding['verify_result']))
        _lag(findings, _label(key), key, binding.get('lag'), interval, warn, crit)
    if not section.get('bindings'):
        findings.add(UNKNOWN, 'requester has no binding')


def _responder(findings, section, interval, warn, crit):
    if not _role_state(findings, 'responder', section):
        return
    secondaries = section.get('secondaries') or {}
    if not secondaries:
        findings.add(UNKNOWN, 'no secondary seen')
    for clientid, secondary in sorted(secondaries.items()):
        if secondary.get('state') == 'offline':
            findings.add(WARNING, 'secondary %s offline' % clientid)
        for key, binding in sorted((secondary.get('bindings') or {}).items()):
            if binding.get('verify_result') in ('differs', 'failed'):
                findings.add(WARNING, '%s %s verification %s' % (clientid, key,
                                                                 binding['verify_result']))
            _lag(findings, _label(clientid, key), '%s %s' % (clientid, key),
                 binding.get('lag'), interval, warn, crit)


def judge(data, warn=DEFAULT_WARN, crit=DEFAULT_CRIT, now=None, path=None):
    """(exit code, line) for the status file's content (None: no file)."""
    findings = Findings()
    where = ' at %s' % path if path else ''
    if not data:
        findings.add(UNKNOWN, 'no status file%s: is weewxd (or the command) running?' % where)
        return UNKNOWN, findings.line()
    station = data.get('station') or {}
    interval = station.get('archive_interval') or 300
    now = time.time() if now is None else now
    age = now - (data.get('written') or 0)
    if age > max(STALE_INTERVALS * interval, STALE_MIN):
        findings.add(UNKNOWN, 'status file%s not written for %.0f s: is weewxd running?'
                     % (where, age))
        return UNKNOWN, findings.line()
    if data.get('requester'):
        _requester(findings, data['requester'], interval, warn, crit)
    if data.get('responder'):
        _responder(findings, data['responder'], interval, warn, crit)
    return findings.worst, findings.line()
