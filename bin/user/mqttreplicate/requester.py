"""The requester: the MQTT side of a secondary.

One Requester holds the MQTT client and one Replica (replica.py) per binding. The paho loop
thread reads each message once into a typed message (messages.py) and posts it to the inbox
of the thread that owns the binding's database: the engine thread for the `main` binding
under weewxd (see driver.py), a Writer thread for every other binding (and for all of them
when run from the command line). The Requester is the replicas' Link to the broker.
"""

import logging
import os
import queue
import threading
import time

from . import VERSION
from . import config as cfg
from . import database, target
from . import messages, protocol
from .replica import Item, Link, Replica, State
from . import homeassistant
from . import statusfile
from .status import LastError, LinkState, Pacer, StatusPublisher, why_no_answer, without
from .faults import RateLimitedLog, is_termination
from .transport import Transport
from .worker import Worker

log = logging.getLogger(__name__)

OFFLINE = -1             # the responder's `connected` while its status says offline
INBOX_SIZE = 1000        # items waiting for the thread that owns a database (SPEC 6.1)
STATUS_SETTLE = 5.0      # routine status changes published once quiet this long (after the
                         # responder's status, which settles in 2 s, told what it has of us)
LAYOUT = protocol.LAYOUT_PACKED   # how pages are asked for (docs/protocol.md)


class Requester(Link):
    """The MQTT side of a secondary: one client, one Replica per binding."""

    def __init__(self, options: cfg.RequesterOptions, config_dict, status_path=None):
        self.options = options
        self.conn = options.connection
        self.config_dict = config_dict
        self.replicas = {}
        self.faults = RateLimitedLog(log)
        self.stopping = threading.Event()
        self.counter_lock = threading.Lock()
        self.rejected = 0            # messages (or parts of them) refused
        self.dropped = 0             # items dropped for want of room in an inbox
        self.received = 0
        self.progress_count = 0
        self.responder_connected = {}    # instance -> `connected` of the responder's status
        self.responder_seen = {}         # instance -> state of the last status seen
        self.fingerprints = {}         # binding key -> the responder's last (since, until, hex)
        self.interval_warned = False
        self.response_topic = protocol.response_topic(self.conn.response_topic,
                                                      self.conn.clientid)
        # the responders' retained status: what the primary has, and when it comes back
        self.responder_status = {protocol.status_topic(self.conn.status_topic, i): i
                                 for i in options.instances}
        # QoS 0 for the statuses: the broker keeps none for us while we are away (the
        # retained one tells the present), so an old one never looks like a responder back
        subscriptions = [self.response_topic] + [
            protocol.archive_topic(self.conn.archive_topic, i) for i in options.instances] + \
            [(topic, 0) for topic in sorted(self.responder_status)]
        self.birth_topic = homeassistant.birth_topic(options.homeassistant, self.conn)
        if self.birth_topic:
            subscriptions.append((self.birth_topic, 0))
        self.connections = 0
        self.status = StatusPublisher(None, 'requester', self.conn.clientid, {
            i: protocol.status_topic(self.conn.status_topic, i, self.conn.clientid)
            for i in options.instances})
        self.transport = Transport(self.conn, subscriptions, self._on_message,
                                   on_connected=self._on_connected, will=self.status.will,
                                   manual_ack=True, name='requester',
                                   on_rejected=self._on_unsigned)
        self.status.transport = self.transport
        self.pacer = Pacer.of(options.archive_interval, STATUS_SETTLE,
                              options.status_heartbeat)
        self.link_state = LinkState()
        self.last_error = LastError(('requester', 'replica', 'driver', 'verify'))
        self.primary = {}              # instance -> {'state', 'offline_since'}
        self.compact_acks = {}         # instance -> its responder takes compact acks
        self.live_compact = True       # we take compact live records (our status says so)
        self.status_file = statusfile.StatusFile(
            status_path or statusfile.status_path(config_dict),
            statusfile.station_info(config_dict, options.archive_interval), 'requester')
        self.discovery = homeassistant.Discovery(
            options.homeassistant, 'requester', config_dict, self.transport,
            os.path.dirname(self.status_file.path), options.archive_interval,
            options.status_heartbeat)
        self.ticker = Worker('requester-status', self._tick, self.faults,
                             'requester: status not published', stopping=self.stopping)

    def add_replica(self, replica):
        self.replicas[replica.key] = replica

    def start(self):
        log.info('requester %s: %s', VERSION, self.conn.describe())
        log.info('requester: replicating %s (catchup = %s)',
                 ', '.join(r.key for r in self.ordered()), self.options.catchup)
        self.last_error.attach()
        self.transport.start()
        self.ticker.start()

    def stop(self):
        self.stopping.set()            # the loop thread no longer waits for a full inbox
        self.ticker.stop(5)
        self.transport.stop(self.status.finals())
        self.link_state.update(False, stopped=True)
        self.status_file.write(self.file_section())
        self.last_error.detach()

    def ordered(self):
        return sorted(self.replicas.values(), key=lambda r: (r.binding.is_main, r.key))

    def is_alive(self):
        return self.transport.is_alive()

    # --- the replicas' link (any thread) --------------------------------------------------------

    @property
    def link(self):
        return self

    def connected(self):
        return self.transport.connected.is_set()

    def ack(self, message):
        self.transport.ack(message)

    def send_records(self, binding, since, until=None, replace=False, correlation=None,
                     days=None):
        """Ask for a page of records newer than since (with the daily summaries from the
        day of `days` on, if not None); the correlation of the answer."""
        return self._ask(binding, messages.RecordsRequest(
            binding.key, self.conn.clientid, since, until, self.options.page_size, replace,
            days=days, layout=LAYOUT), correlation)

    def send_digest(self, binding, since, until, bucket, columns, correlation=None,
                    summaries=False, null_inf=False):
        """Ask for the digest of since < dateTime <= until (SPEC 5.5), with the daily
        summaries' if summaries, an infinity as NULL if null_inf."""
        return self._ask(binding, messages.DigestRequest(
            binding.key, self.conn.clientid, since, until, bucket, tuple(columns), summaries,
            null_inf), correlation)

    def _ask(self, binding, request, correlation=None):
        correlation = correlation or protocol.new_correlation()
        self.transport.publish(protocol.request_topic(self.conn.request_topic, binding.instance),
                               *request.encode(), correlation=correlation,
                               response_topic=self.response_topic,
                               expiry=max(int(self.options.page_timeout), 1))
        return correlation

    def send_ack(self, replica):
        try:
            compact = self.compact_acks.get(replica.binding.instance, False)
            ack = messages.Ack(None if compact else replica.key, self.conn.clientid,
                               {replica.key: (replica.position, replica.stored)})
            self.transport.publish(
                protocol.request_topic(self.conn.request_topic, replica.binding.instance),
                *ack.encode())
        except Exception as e:
            if is_termination(e):
                raise
            log.debug('requester: ack not sent: %s', e)

    def _tick(self):
        """One turn of the status ticker (every second): publish the status when the pacer
        says so (quiet statuses: docs/protocol.md), and offer the status file its section."""
        if self.stopping.wait(1.0):
            return
        connected = self.transport.connected.is_set()
        self.link_state.update(connected)
        key = self.urgent_key()
        if connected:
            statuses = self._statuses()
            content = {i: without(s, 'time') for i, s in statuses.items()}
            steady = self.steady(statuses)
            if self.pacer.due(content, key, steady):
                self.pacer.published(content, key, steady)
                self.status.publish(lambda: statuses)
            self.discovery.remove()
            self.discovery.update(homeassistant.requester_components(self.discovery, self),
                                  self.connections)
        self.status_file.offer(self.file_section(), key)

    @staticmethod
    def steady(statuses):
        """True if every binding is live with no lag: its routine changes wait for the
        heartbeat (the ack tells the primary where we are)."""
        return all(b['state'] == 'live' and b['lag'] == 0 and not b['catching_up']
                   for s in statuses.values() for b in s['bindings'].values())

    def urgent_key(self):
        """What a reader must see at once: the connection, each binding's state, its
        refusal and its last verification, the last error."""
        error = self.last_error.last
        return (self.transport.connected.is_set(), error and error['time'], self.live_compact,
                tuple((r.key, r.state, r.refusal, r.verifier.verified, r.verifier.result)
                      for r in self.ordered()))

    def plain_live(self, why):
        """Ask the responders (through our status) for plain live records with whole days
        from now on (any thread)."""
        if self.live_compact:
            log.info('requester: %s: asking for live records with whole days from now on',
                        why)
            self.live_compact = False

    def file_section(self):
        """Our key of the station's status file (statusfile.requester_section)."""
        return statusfile.requester_section(self, self.link_state, self.last_error)

    def primary_state(self):
        """The primary as its responders' statuses tell: online, offline (since when) or
        unknown (no status seen)."""
        states = list(self.primary.values())
        if not states:
            return {'state': 'unknown', 'offline_since': None}
        offline = [s for s in states if s['state'] == 'offline']
        if offline:
            return {'state': 'offline', 'offline_since': max(
                (s['offline_since'] for s in offline if s['offline_since']), default=None)}
        return {'state': 'online' if all(s['state'] == 'online' for s in states)
                else 'unknown', 'offline_since': None}

    def _statuses(self):
        statuses = {}
        for instance in self.options.instances:
            bindings = {}
            for replica in self.ordered():
                if replica.binding.instance != instance:
                    continue
                lag = None
                if replica.primary_newest:
                    lag = max(replica.primary_newest - replica.position, 0)
                bindings[replica.key] = {'state': statusfile.REPLICA_STATES.get(
                                             replica.state.value, replica.state.value),
                                         'newest': replica.position,
                                         'primary_newest': replica.primary_newest,
                                         'lag': lag, 'stored': replica.stored,
                                         'acknowledged': replica.acknowledged,
                                         'catching_up': replica.catching_up,
                                         'verified': replica.verifier.verified,
                                         'verify_result': replica.verifier.result,
                                         'repaired': replica.verifier.repaired,
                                         'summaries': replica.sink.summaries,
                                         'summaries_why': replica.sink.summaries_why}
            # live: what live records we take (the responder sends compact ones only if
            # every secondary takes them: docs/protocol.md)
            statuses[instance] = dict(self.status.online(instance), bindings=bindings,
                                      rejected=self.rejected, live=protocol.LIVE_COMPACT
                                      if self.live_compact else protocol.LIVE_PLAIN)
        return statuses

    def count(self, name, n=1):
        """Add n to the counter `name` (rejected, dropped); any thread."""
        with self.counter_lock:
            setattr(self, name, getattr(self, name) + n)

    def progress(self, count):
        with self.counter_lock:
            self.progress_count += count
            total = self.progress_count
        every = self.options.log_msg_count
        if every and total % every < count:
            log.info('requester: %d records stored', total)

    # --- receiving (loop thread) -------------------------------------------------------------

    def _on_connected(self, session_present):
        self.connections += 1
        for replica in self.ordered():
            replica.want_catchup()

    def _reject(self, kind, text, *args, replica=None):
        self.count('rejected')
        if replica is not None:
            replica.rejected += 1
        self.faults(logging.WARNING, kind, 'requester: rejected a message: ' + text, *args)

    def _on_unsigned(self, message):
        """A message without a valid signature: the transport logged and dropped it."""
        self.count('rejected')

    def _on_message(self, message):
        """Every message but the unsigned ones (with a shared_secret): read it once, and
        hand it to the replica of its binding."""
        if message.topic == self.birth_topic:
            self.transport.ack(message)
            self.discovery.on_birth(message.payload)
            return
        envelope = messages.Envelope.of(message)
        instance = self.responder_status.get(envelope.topic)
        if instance is not None:
            self._on_responder_status(envelope, instance)
            return
        self.received += 1
        replica = self.replicas.get(envelope.binding)
        if replica is None:
            log.debug('requester: message for unknown binding %r on %s ignored',
                      envelope.binding, envelope.topic)
            self.transport.ack(message)
            return
        replica.last_contact = int(time.time())
        if envelope.topic == self.response_topic:
            self.transport.ack(message)
            self._on_answer(envelope, replica)
        else:
            self._on_live(envelope, replica)

    def _on_live(self, envelope, replica):
        """A live record: acknowledged once stored (or held, during a catch-up)."""
        key = replica.key
        if protocol.instance_of(envelope.topic, self.conn.archive_topic) \
                != replica.binding.instance:
            self._reject('topic', 'binding %s on topic %s', key, envelope.topic,
                         replica=replica)
            self.transport.ack(envelope.message)
            return
        try:
            live = messages.LiveRecord.decode(envelope)
        except protocol.ProtocolError as e:
            self._reject('malformed', '%s (binding %s, topic %s)', e, key, envelope.topic,
                         replica=replica)
            self.transport.ack(envelope.message)
            return
        if live.days_error:
            self._reject('malformed', 'daily summaries of live record %s (binding %s) left '
                         'out: %s', live.record['dateTime'], key, live.days_error,
                         replica=replica)
        if replica.binding.is_main:
            self._check_interval(replica, live.record)
        replica.post(Item('live', live, message=envelope.message))

    def _check_interval(self, replica, record):
        """Warn once if the primary's archive interval (its live records' `interval`) is
        not this station's: the engine's archive periods would not match the records."""
        minutes = record.get('interval')
        if self.interval_warned or not isinstance(minutes, (int, float)) or minutes <= 0:
            return
        primary = int(round(minutes * 60))
        if primary != self.options.archive_interval:
            self.interval_warned = True
            log.warning("requester: %s: the primary's archive interval is %d s (its records' "
                        "interval), this station's is %d s (option 'archive_interval' in "
                        "section [%s][Requester]); set archive_interval = %d there",
                        replica.key, primary, self.options.archive_interval,
                        self.conn.section, primary)

    def _on_answer(self, envelope, replica):
        """A message on our response topic: part of a verification's answer, of a catch-up
        page, or of a protocol-1 answer (acknowledged at once: an old responder floods its
        whole answer, and what the broker cannot queue for us it drops; a record lost here
        is asked for again)."""
        key, correlation = replica.key, envelope.correlation
        expected = replica.verifier.expects(correlation)
        if expected is not None:
            try:
                answer = messages.decode_answer(envelope, expected)
            except protocol.ProtocolError as e:
                self._reject('malformed', '%s (answer to a verification of %s)', e, key,
                             replica=replica)
                answer = e             # the verification gives up at once
            replica.post(Item('verify', answer, correlation))
            return
        if replica.verifier.expected(correlation):
            log.debug('requester: %s: late answer to a verification ignored', key)
            return
        try:
            answer = messages.decode_answer(envelope)
        except protocol.ProtocolError as e:
            self._reject('malformed', '%s (binding %s, topic %s)', e, key, envelope.topic,
                         replica=replica)
            return
        if isinstance(answer, messages.ErrorReply):
            replica.post(Item('refused', answer, correlation))
            return
        if answer.rejected:
            self.count('rejected')      # messages with something rejected
            replica.rejected += 1
            self.faults(logging.WARNING, 'record',
                        'requester: rejected %d of %d records (binding %s, topic %s): %s',
                        len(answer.rejected), answer.sent, key, envelope.topic,
                        answer.rejected[0])
        if answer.version == 1:
            replica.post_legacy(answer.records)
        elif not replica.post_batch(correlation, answer):
            self._reject('malformed', 'a page ends with more=1 and last=%s, which does not '
                         'advance (binding %s)', answer.last, key, replica=replica)

    def _past_edited(self, replica, fingerprint):
        """The responder's fingerprint of its recent whole days changed for the same range:
        its past was edited (an import, a correction): verify now, not at the next daily
        verification."""
        before = self.fingerprints.get(replica.key)
        if fingerprint is None:
            return
        self.fingerprints[replica.key] = fingerprint
        if before is not None and before[:2] == fingerprint[:2] and before != fingerprint:
            log.info("requester: %s: the primary's days from %s to %s changed; verifying "
                     "now", replica.key, time.strftime('%Y-%m-%d', time.gmtime(
                         fingerprint[0] + 1)), time.strftime('%Y-%m-%d', time.gmtime(
                             fingerprint[1])))
            replica.verifier.schedule()
            replica.wake()

    def silence(self, instance):
        """What was seen of the instance's responder, and why it may not answer."""
        return why_no_answer(self.conn, instance, self.responder_seen.get(instance))

    def responder_online(self, instance):
        return self.responder_seen.get(instance) == 'online'

    def _on_responder_status(self, envelope, instance):
        """The responder's status: learn the primary's newest records; a responder that
        (re)appears gets the catch-ups that found nobody to answer."""
        self.transport.ack(envelope.message)
        try:
            status = messages.ResponderStatus.decode(envelope.payload, self.conn.clientid)
        except protocol.ProtocolError as e:
            self._reject('status', 'responder status on %s: %s', envelope.topic, e)
            return
        self._note_primary(instance, status.state, envelope.message)
        self.responder_seen[instance] = status.state
        self.compact_acks[instance] = status.compact_acks
        if status.state == 'offline':
            self.responder_connected[instance] = OFFLINE
        if not status.online:
            return
        # A responder that connected after our request was sent may never have seen it (a
        # broker restart without persistence): ask again at once rather than wait. Only the
        # responder's own clock is compared with itself: it reconnected if its `connected`
        # differs from the one of the last status we saw, or if that status said offline.
        # The first status we see tells nothing (retained, or queued in our session).
        seen = self.responder_connected.get(instance)
        reconnected = status.connected is not None and seen is not None \
            and status.connected != seen
        if status.connected is not None:
            self.responder_connected[instance] = status.connected
        for replica in self.replicas.values():
            if replica.binding.instance != instance:
                continue
            newest = status.newest.get(replica.key)
            if newest is not None:
                replica.primary_newest = max(replica.primary_newest or 0, newest)
            self._past_edited(replica, status.fingerprints.get(replica.key))
            acknowledged = status.acknowledged.get(replica.key)
            replica.acknowledged = acknowledged
            missed = reconnected and replica.state is State.ASKING
            if replica.unanswered or missed:
                log.info('requester: %s: the responder is back; asking again', replica.key)
                replica.want_catchup()
        # (what the primary knows of us is part of our status: the ticker publishes it)

    def _note_primary(self, instance, state, message):
        """The primary's state from its status: online, offline since when (unknown for a
        retained offline status found at start), else unknown."""
        state = state if state in ('online', 'offline') else 'unknown'
        before = self.primary.get(instance) or {'state': None, 'offline_since': None}
        since = before['offline_since']
        if state == 'offline' and before['state'] != 'offline':
            since = None if getattr(message, 'retain', False) else int(time.time())
        self.primary[instance] = {'state': state,
                                  'offline_since': since if state == 'offline' else None}


class Writer:
    """The thread that owns the databases of the replicas it serves (every binding but
    `main` under weewxd; all of them from the command line): a worker.Worker serving one
    inbox. A failure is logged and the worker goes on; the replicas then start again from
    what their databases hold (Replica.recover)."""

    def __init__(self, requester, name='requester-writer'):
        self.requester = requester
        self.inbox = queue.Queue(INBOX_SIZE)
        self.replicas = []
        self.failed = None             # the last failure, for whoever asks why
        self.worker = Worker.serving(name, self.inbox, self._handle, requester.faults,
                                     'requester: writer', idle=self._idle, setup=self._open,
                                     cleanup=self._close, on_failure=self._recover)

    def add(self, binding, config_dict, preferred_units=None):
        mgr_dict = database.manager_dict(config_dict, binding.secondary_data_binding,
                                         binding.where('secondary_data_binding'))

        def open_store():
            return target.TargetDatabase(mgr_dict, binding.initialize, preferred_units)

        replica = Replica(self.requester, binding, self.inbox, open_store)
        self.replicas.append(replica)
        self.requester.add_replica(replica)
        return replica

    def start(self):
        self.worker.start()

    def stop(self):
        self.worker.stop(30)

    def is_alive(self):
        return self.worker.is_alive()

    def _open(self):
        for replica in self.replicas:
            replica.open()

    def _handle(self, item):
        item.replica.handle(item)
        item.replica.flush_ack()

    def _idle(self):
        """Timeouts and acks of every binding, even while another one is busy."""
        for replica in self.replicas:
            replica.idle()

    def _recover(self, failure):
        self.failed = failure
        for replica in self.replicas:
            replica.recover()

    def _close(self):
        for replica in self.replicas:
            replica.close()
