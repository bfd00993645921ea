"""Test-only WeeWX services for the end-to-end tests, run *inside* a primary's weewxd.

tests/e2e copies this file into a test station as ``bin/user/e2e_services.py``; the station's
weewx.conf names the services ``user.e2e_services.<Class>`` and sets their options in ``[E2E]``.
Nothing in the MQTTReplicate package imports it.

Gate (restful_services, after user.mqttreplicate.MQTTResponder)
    The generator-mode simulator never rests, so a SIGTERM could land anywhere in its engine
    thread.  The gate lets a test hold the engine *between* records, after the responder has
    published the current one: while ``[E2E] gate_file`` holds an integer N, the engine thread
    waits in the NEW_ARCHIVE_RECORD handler of the first record with dateTime >= N
    (log: ``e2e gate: holding after record <ts>``) until the file changes.  A SIGTERM then
    stops weewxd as it would stop a real primary, idle between two archive periods.  Tests
    also use the gate to keep the simulator from running past "now".

AirQuality (archive_services, after weewx.engine.StdArchive)
    Writes one record per archive record into ``[E2E] aq_binding`` (a second binding, as an
    air-quality extension would), so the primary has live records in two bindings.

SignalAfterCommit (archive_services, after weewx.engine.StdArchive)
    Fault injection: at the first record with dateTime >= ``[E2E] signal_after_commit``,
    sends ``[E2E] signal`` (TERM or KILL) to its own weewxd *after* StdArchive committed the
    record and *before* the responder (a restful service) saw it -- where a real SIGTERM
    most often lands, since the record's commit (fsync) is the slowest step of a period.

SigtermInResponder (any group)
    Fault injection: at the first record with dateTime >= ``[E2E] sigterm_in_responder``,
    sends SIGTERM to its own weewxd while the engine thread is inside the responder's
    NEW_ARCHIVE_RECORD handler (reading the record it is about to publish).

SigtermInRequesterAck (any group, on a secondary)
    Fault injection: when ``[E2E] sigterm_in_requester_ack`` is true, sends SIGTERM to its own
    weewxd the first time the engine thread acknowledges stored records (inside
    Requester.send_ack).

FailingReads (any group, on a primary)
    Fault injection: makes the responder's reads of a page fail. ``[E2E] failing_reads`` is
    a comma-separated list of exception names (``OperationalError`` -- weedb's -- or any
    builtin, e.g. ``RuntimeError``): after ``[E2E] failing_reads_after`` calls (default 0) of
    ``user.mqttreplicate.database.SourceDatabase.read_columns`` (a page's read) went
    through, the next calls raise those exceptions, one each, in that order (log: ``e2e:
    read_columns call <n> raises <name>``); every later call works.
"""

import logging
import os
import signal
import sys
import time

import weewx
import weewx.manager
from weewx.engine import StdService

log = logging.getLogger(__name__)

RESPONDER_MODULE = 'user.mqttreplicate.responder'


def _options(config_dict):
    return config_dict.get('E2E', {})


def _read_limit(path):
    """The integer in the gate file, or None (file missing or not a number)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _signal_self(signum, what, ts):
    log.info('e2e: sending %s to myself %s (record %d)', signal.Signals(signum).name, what, ts)
    os.kill(os.getpid(), signum)
    # weewxd's handler raises Terminate in this (the main) thread during the sleep.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)


class Gate(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        options = _options(config_dict)
        self.gate_file = options.get('gate_file')
        self.pace = float(options.get('pace', 0))
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.new_archive_record)

    def new_archive_record(self, event):
        ts = event.record['dateTime']
        if self.pace:
            time.sleep(self.pace)
        if not self.gate_file:
            return
        held = False
        while True:
            limit = _read_limit(self.gate_file)
            if limit is None or ts < limit:
                break
            if not held:
                log.info('e2e gate: holding after record %d', ts)
                held = True
            time.sleep(0.05)
        if held:
            log.info('e2e gate: released after record %d', ts)


def aq_record(ts, usUnits, interval):
    """A deterministic air-quality record for dateTime ts (wview_extended columns)."""
    phase = (ts // 300) % 288
    return {'dateTime': ts, 'usUnits': usUnits, 'interval': interval,
            'pm1_0': 2.0 + (phase % 17) * 0.25,
            'pm2_5': 5.0 + (phase % 31) * 0.5,
            'pm10_0': 9.0 + (phase % 43) * 0.75,
            'co2': 400.0 + (phase % 97),
            'no2': None if phase % 5 == 0 else 10.0 + phase % 7}


class AirQuality(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        self.binding = _options(config_dict).get('aq_binding', 'aq_binding')
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.new_archive_record)

    def new_archive_record(self, event):
        record = event.record
        manager = self.engine.db_binder.get_manager(self.binding, initialize=True)
        manager.addRecord(aq_record(record['dateTime'], record['usUnits'], record['interval']),
                          log_success=False)


class SignalAfterCommit(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        options = _options(config_dict)
        self.at = int(options.get('signal_after_commit', 0))
        self.signum = getattr(signal, 'SIG' + options.get('signal', 'TERM').upper())
        self.fired = False
        self.bind(weewx.NEW_ARCHIVE_RECORD, self.new_archive_record)

    def new_archive_record(self, event):
        ts = event.record['dateTime']
        if self.at and not self.fired and ts >= self.at:
            self.fired = True
            _signal_self(self.signum, 'after committing and before publishing', ts)


class SigtermInResponder(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        at = int(_options(config_dict).get('sigterm_in_responder', 0))
        original = weewx.manager.Manager.getRecord
        state = {'fired': False}

        def getRecord(manager, timestamp, max_delta=None):
            caller = sys._getframe(1).f_globals.get('__name__')
            if caller == RESPONDER_MODULE and at and not state['fired'] and timestamp >= at:
                state['fired'] = True
                _signal_self(signal.SIGTERM, 'inside the responder', timestamp)
            return original(manager, timestamp, max_delta)

        weewx.manager.Manager.getRecord = getRecord


class SigtermInRequesterAck(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        import threading
        from user.mqttreplicate import requester
        if str(_options(config_dict).get('sigterm_in_requester_ack', '')).lower() != 'true':
            return
        original = requester.Requester.send_ack
        state = {'fired': False}

        def send_ack(self_, replica):
            if not state['fired'] and threading.current_thread() is threading.main_thread():
                state['fired'] = True
                _signal_self(signal.SIGTERM, 'inside the requester\'s ack', 0)
            return original(self_, replica)

        requester.Requester.send_ack = send_ack


class FailingReads(StdService):
    def __init__(self, engine, config_dict):
        super().__init__(engine, config_dict)
        import builtins
        import threading
        import weedb
        from user.mqttreplicate import database
        options = _options(config_dict)
        names = [n.strip() for n in str(options.get('failing_reads', '')).split(',')
                 if n.strip()]
        if not names:
            return
        after = int(options.get('failing_reads_after', 0))
        kinds = [weedb.OperationalError if n == 'OperationalError' else getattr(builtins, n)
                 for n in names]
        original = database.SourceDatabase.read_columns
        lock = threading.Lock()
        calls = [0]

        def read_columns(source, since, until, limit):
            with lock:
                n = calls[0]
                calls[0] += 1
            if after <= n < after + len(kinds):
                kind = kinds[n - after]
                log.info('e2e: read_columns call %d raises %s', n, kind.__name__)
                raise kind('e2e: injected failure of read_columns call %d' % n)
            return original(source, since, until, limit)

        database.SourceDatabase.read_columns = read_columns
