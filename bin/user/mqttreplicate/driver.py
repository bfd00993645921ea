"""The requester as a WeeWX driver.

The `main` binding's records reach the engine on the engine thread: the backlog in bulk inside
genStartupRecords (catchup = direct) or record by record (catchup = engine), live records
from genLoopPackets as `hardware` archive records, strictly in increasing dateTime order.
Other bindings are stored by a writer thread that owns their connections. Loop packets are
heartbeats that keep the engine's archive periods turning; WeeWX never synthesises a record.
"""

import logging
import queue
import signal
import threading
import time

import weeutil.weeutil
import weewx
import weewx.drivers
import weewx.engine

from . import DRIVER_NAME, VERSION
from . import config as cfg
from . import database, target
from .summaries import PRIMARY_DAYS
from .requester import INBOX_SIZE, Replica, Requester, Writer
from .transport import is_termination, require_paho

log = logging.getLogger(__name__)

HEARTBEAT_KEY = 'mqttreplicateHeartbeat'
IDLE_EVERY = 1.0       # seconds: the main binding's idle() at least this often


def loader(config_dict, engine):
    return MQTTRequesterDriver(config_dict, engine)


class MQTTRequesterDriver(weewx.drivers.AbstractDevice):
    """Replicates the primary's records into this station."""

    def __init__(self, config_dict, engine):
        try:
            require_paho()
            self.options = cfg.parse_requester(config_dict)
        except cfg.ConfigError as e:
            raise weewx.engine.InitializationError('MQTTReplicate: %s' % e) from None
        generation = config_dict.get('StdArchive', {}).get('record_generation', 'hardware')
        if str(generation).lower() != 'hardware':
            # software generation would store a near-empty record every period, which then
            # blocks the replicated record with the same dateTime
            raise weewx.engine.InitializationError(
                "MQTTReplicate: option 'record_generation' in section [StdArchive] must be "
                "'hardware' on a secondary, not '%s' (weectl station reconfigure "
                "--driver=user.mqttreplicate sets it)" % generation)
        self.engine = engine
        self.requester = Requester(self.options, config_dict)
        self.units = database.engine_units(config_dict)
        self.writer = None
        self.main = None
        self.heartbeat = HeartbeatUnits(self.options.archive_interval)
        self.last_idle = time.monotonic()
        self.termination = TerminationGuard()
        others = [b for b in self.options.bindings if not b.is_main]
        try:
            if others:
                self.writer = Writer(self.requester)
                for binding in others:
                    self.writer.add(binding, config_dict)
            main = self.options.main_binding
            if main is not None:
                database.manager_dict(config_dict, main.secondary_data_binding,
                                      main.where('secondary_data_binding'))
                self.main = Replica(self.requester, main, queue.Queue(INBOX_SIZE),
                                    self._open_main, deliver=self._dispatch)
                self.requester.add_replica(self.main)
        except LookupError as e:
            raise weewx.engine.InitializationError('MQTTReplicate: %s' % e) from None
        log.info('driver %s: loop_interval %s s, archive_interval %s s', VERSION,
                 self.options.loop_interval, self.options.archive_interval)
        if self.writer is not None:
            self.writer.start()
        self.requester.start()

    # --- engine thread -----------------------------------------------------------------------

    def _open_main(self):
        binding = self.options.main_binding
        manager = self.engine.db_binder.get_manager(binding.secondary_data_binding,
                                                    initialize=True)
        return target.TargetDatabase(None, manager=manager, preferred_units=self.units)

    def _dispatch(self, record, days=None):
        """Hand a record to the engine, as a hardware archive record, with the primary's
        summaries of its day that will replace what StdArchive makes of it (days, for a
        responder on this station: a relay). StdArchive merges the heartbeats'
        accumulators into the record's day, which fails if their unit system is not the
        record's: until the heartbeats have caught up with a new unit system (an empty
        database's first records), records are stored directly."""
        if not self.heartbeat.compatible(record['usUnits']):
            self.heartbeat.warn_once(record['usUnits'])
            return self.main.store.store_one(record)
        event = weewx.Event(weewx.NEW_ARCHIVE_RECORD, record=record, origin='hardware')
        if days is not None:
            setattr(event, PRIMARY_DAYS, days)
        self.engine.dispatchEvent(event)
        return True

    def _idle(self):
        self.last_idle = time.monotonic()
        self.main.idle()

    def _check_threads(self):
        if not self.requester.is_alive():
            raise weewx.WeeWxIOError('MQTTReplicate: the MQTT thread has stopped')
        if self.writer is not None and not self.writer.is_alive():
            raise weewx.WeeWxIOError('MQTTReplicate: the writer thread has stopped: %s'
                                     % self.writer.failed)

    def _serve_main(self, seconds, done=None):
        """Process the main binding's inbox for up to `seconds`, or until the event `done`
        is set; idle() when it is quiet and, while items keep coming (live records every
        second), at least once a second: page time-outs and the verification must not
        wait for a pause."""
        end = time.monotonic() + seconds
        while done is None or not done.is_set():
            self.termination.check()
            now = time.monotonic()
            remaining = end - now
            if remaining <= 0:
                break
            try:
                try:
                    item = self.main.inbox.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    self._idle()
                    continue
                self.main.handle(item)
                self.main.flush_ack()
                if time.monotonic() - self.last_idle >= IDLE_EVERY:
                    self._idle()
            except Exception as e:
                if is_termination(e):
                    raise
                # anything else would make weewxd exit; an I/O error makes it restart us
                log.error('driver: %s: %s', type(e).__name__, e)
                raise weewx.WeeWxIOError('MQTTReplicate: %s: %s' % (type(e).__name__, e))

    def genStartupRecords(self, last_ts):
        """Catch up the main binding before the engine's loop starts. Records are stored in
        bulk or dispatched to the engine here; nothing is yielded."""
        if self.main is None:
            return
        self.main.open()
        options = self.options
        patience = options.startup_max_tries * options.startup_wait_before_retry
        waited_since = time.monotonic()
        log.info('driver: catching up %s since %s', self.main.key, self.main.position)
        while not self.main.caught_up.is_set():
            self._check_threads()
            if not self.requester.transport.connected.is_set():
                if time.monotonic() - waited_since > patience:
                    log.warning('driver: broker not reachable after %.0f s; starting anyway, '
                                'catching up once it is', patience)
                    return
            else:
                waited_since = time.monotonic()
            self._serve_main(1.0, self.main.caught_up)
            if self.main.unanswered:
                log.warning('driver: no answer to the catch-up; starting anyway')
                return
            if self.main.refused:
                log.warning('driver: the catch-up of %s was refused (see above); starting '
                            'without it', self.main.key)
                return
        log.info('driver: %s caught up at %s (%d records)', self.main.key, self.main.position,
                 self.main.stored)
        yield from ()

    def genLoopPackets(self):
        while True:
            self._check_threads()
            if self.main is not None:
                self.main.open()
                self._serve_main(self.options.loop_interval)
            else:
                time.sleep(self.options.loop_interval)
            now = int(time.time())
            units = self.heartbeat.units(now, lambda: (
                self.main.store.unit_system() if self.main is not None else None)
                or self.units or weewx.US)
            yield {'dateTime': now, 'usUnits': units, HEARTBEAT_KEY: 1}

    def genArchiveRecords(self, lastgood_ts):
        """Records are dispatched as they arrive; nothing is left for the engine to pull,
        and nothing must be synthesised."""
        return iter(())

    @property
    def hardware_name(self):
        return DRIVER_NAME

    @property
    def archive_interval(self):
        return self.options.archive_interval

    def closePort(self):
        self.termination.remove()
        try:
            self.requester.stop()
        finally:
            if self.writer is not None:
                self.writer.stop()
            if self.main is not None:
                self.main.close()


class HeartbeatUnits:
    """The unit system of the heartbeat loop packets: the main database's, chosen once per
    archive interval. StdArchive's accumulator of an interval refuses packets of another
    unit system, so it may change only when a new interval begins (an empty database learns
    its unit system from the first record stored)."""

    def __init__(self, interval):
        self.interval = interval
        self.period = None             # start of the interval of the last heartbeat
        self.current = None            # unit system of that interval's heartbeats
        self.previous = None           # and of the interval before (StdArchive keeps it)
        self.warned = False

    def units(self, now, choose):
        period = weeutil.weeutil.startOfInterval(now, self.interval)
        if period != self.period:
            # StdArchive's old accumulator is the one of the last interval that had packets
            self.previous = self.current
            self.period = period
            self.current = choose()
        return self.current

    def compatible(self, units):
        """Can a record of this unit system meet the engine's accumulators?"""
        return all(u is None or u == units for u in (self.current, self.previous))

    def warn_once(self, units):
        if not self.warned:
            self.warned = True
            log.info('driver: records in unit system %s are stored directly until the '
                     "engine's heartbeats (unit system %s) change over at the next archive "
                     'interval', units, self.current)


class TerminationGuard:
    """Makes sure weewxd's SIGTERM stops the engine. weewxd's handler raises Terminate
    wherever the engine thread is; when that is inside a logging call, the logging module
    swallows it ("--- Logging error ---") and weewxd runs on until it is killed. This guard
    notes the signal and, if the engine thread is still here afterwards, calls weewxd's
    handler again from a place where the exception can travel."""

    def __init__(self):
        self.handler = None
        self.signalled = False
        if threading.current_thread() is not threading.main_thread():
            return                      # signals can be handled only in the main thread
        previous = signal.getsignal(signal.SIGTERM)
        if callable(previous):
            self.handler = previous
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        self.signalled = True
        self.handler(signum, frame)

    def check(self):
        """Raise weewxd's Terminate again if its first one was lost."""
        if self.signalled and self.handler is not None:
            log.info('driver: SIGTERM arrived during a log call; stopping now')
            self.signalled = False
            self.handler(signal.SIGTERM, None)

    def remove(self):
        """Give weewxd's handler back (at closePort, in the main thread)."""
        if self.handler is not None and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) == self._on_signal:
            signal.signal(signal.SIGTERM, self.handler)
        self.handler = None
