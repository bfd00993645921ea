"""The retained status of either role (SPEC 5.6), published in one place.

Each instance has one status topic. While a role runs it publishes a picture of what it
knows there (retained, QoS 1); its last will and its clean stop publish the same offline
payload there, so a status topic always tells whether its publisher is online.
"""

import logging
import threading
import time

from . import VERSION
from . import protocol


class StatusPublisher:
    """Publishes one retained status per instance; the lock makes sure an older picture is
    never published after a newer one.

        publisher = StatusPublisher(None, 'requester', clientid, {'weewx': 'replicate/...'})
        transport = Transport(..., will=publisher.will)
        publisher.transport = transport        # the Transport takes the will when made
        publisher.publish(lambda: {'weewx': dict(publisher.online('weewx'), lag=0)})
        transport.stop(publisher.finals())

    transport: what publish() publishes through (Transport.publish(topic, payload, qos=,
        retain=)); it may be None until the first publish(), since the Transport needs the
        will before it exists.
    role: 'responder' or 'requester'; clientid: our MQTT client id.
    topics: {instance: status topic}, in a stable order (the will goes on the first one).
    """

    def __init__(self, transport, role, clientid, topics):
        self.transport = transport
        self.role = role
        self.clientid = clientid
        self.topics = dict(topics)
        self.offline = protocol.encode_json({'state': 'offline', 'role': role,
                                             'clientid': clientid})
        self.lock = threading.Lock()

    def online(self, instance=None):
        """The fields every online status starts with (instance only if given); a role
        adds its own."""
        fields = {'state': 'online', 'role': self.role, 'version': VERSION,
                  'clientid': self.clientid}
        if instance is not None:
            fields['instance'] = instance
        fields['time'] = int(time.time())
        return fields

    def publish(self, statuses):
        """Publish the status of each instance in statuses ({instance: dict}; instances
        without a topic are left out) retained with QoS 1. statuses may also be a function
        that returns that dict: it is called under the lock, so of two threads publishing
        at once the one whose picture is newer publishes last."""
        with self.lock:
            if callable(statuses):
                statuses = statuses()
            for instance, topic in self.topics.items():
                if instance in statuses:
                    self.transport.publish(topic, protocol.encode_json(statuses[instance]),
                                           qos=1, retain=True)

    def finals(self):
        """[(topic, offline payload)] of every instance: for Transport.stop(finals)."""
        return [(topic, self.offline) for topic in self.topics.values()]

    @property
    def will(self):
        """(first topic, offline payload): for Transport(will=...)."""
        return next(iter(self.topics.values())), self.offline


# --- when to publish (quiet statuses) --------------------------------------------------------

LAG_GRACE = 30.0    # seconds a lag may last before it is news (Pacer.of)


class Pacer:
    """When a status is published: at once when what a reader needs to see changed (the
    `key`: online or offline, catching up or live, a refusal, an error, a verification),
    else its routine changes (newest records, acknowledgements, counters) folded into one
    message: once nothing changed for `settle` seconds, or `period` seconds after the first
    unpublished change. A steady picture (the caller says: every binding live, no lag)
    that replaces a steady one waits for the heartbeat instead: `heartbeat` seconds after
    the last publication (None: never waits). In steady state that is one status per
    heartbeat. A picture that is not steady after a steady one goes out once it has not
    been steady for `grace` seconds (a record whose acknowledgements are on their way is
    not news; a secondary that stays behind is), and the first steady one after it once
    settled.

        if pacer.due(content, key, steady):     # content: the status without its time
            publish(...)
            pacer.published(content, key, steady)
    """

    def __init__(self, period, settle, heartbeat=None, grace=0):
        self.period = period
        self.settle = settle
        self.heartbeat = heartbeat
        self.grace = grace
        self.unsteady = None           # monotonic time the picture stopped being steady
        self.content = None            # as last published
        self.key = None
        self.steady = False            # and whether it was steady
        self.at = None                 # monotonic time of that publication
        self.never = True
        self.seen = None               # the content of the last call
        self.first = None              # monotonic time of the first unpublished change
        self.last = None               # and of the latest

    @classmethod
    def of(cls, interval, settle, heartbeat):
        """The pacer of a role: heartbeat in archive intervals (1: no heartbeat, a
        status after every record as before); a grace of half an interval, at most
        LAG_GRACE seconds."""
        if heartbeat <= 1:
            return cls(interval, settle)
        return cls(interval, settle, heartbeat * interval, min(interval / 2.0, LAG_GRACE))

    def due(self, content, key, steady=False, now=None):
        now = time.monotonic() if now is None else now
        self.unsteady = None if steady else (now if self.unsteady is None else self.unsteady)
        if self.never or key != self.key:
            return True
        if content == self.content:
            self.first = None
            return False
        if self.first is None:
            self.first = now
        if content != self.seen:
            self.seen = content
            self.last = now
        settled = now - self.last >= self.settle or now - self.first >= self.period
        if settled and self.steady and self.heartbeat:
            if steady:
                return now - self.at >= self.heartbeat
            return now - self.unsteady >= self.grace
        return settled

    def published(self, content, key, steady=False, now=None):
        self.content, self.key, self.never = content, key, False
        self.steady = steady
        self.at = time.monotonic() if now is None else now
        self.seen = content
        self.first = self.last = None


def without(status, *names):
    """status without the named fields (the time stamps a Pacer does not compare)."""
    return {k: v for k, v in status.items() if k not in names}


class LinkState:
    """A role's connection, for the status file: 'connecting', 'online' or 'offline' (stopped),
    and since when."""

    def __init__(self):
        self.state = 'connecting'
        self.since = int(time.time())

    def update(self, connected, stopped=False):
        state = 'offline' if stopped else 'online' if connected else 'connecting'
        if state != self.state:
            self.state, self.since = state, int(time.time())
        return self.state


class LastError(logging.Handler):
    """Keeps the newest warning or error a role logged ({"time", "message"}), for its status.

    loggers: the names (of this package's modules) whose records belong to the role; the
    handler sits on the package's logger, so both roles in one weewxd keep their own."""

    def __init__(self, loggers):
        super().__init__(logging.WARNING)
        self.loggers = tuple(loggers)
        self.last = None

    def emit(self, record):
        if record.name.endswith(self.loggers):
            try:
                self.last = {'time': int(record.created), 'message': record.getMessage()}
            except Exception:
                pass

    def attach(self):
        logging.getLogger(PACKAGE).addHandler(self)
        return self

    def detach(self):
        logging.getLogger(PACKAGE).removeHandler(self)


PACKAGE = __name__.rsplit('.', 1)[0]


def why_no_answer(conn, instance, seen):
    """What a secondary saw of its primary's responder when nothing answered, and the likely
    causes, most likely first: one sentence for the log and the `status` command.

    conn: the requester's ConnectionOptions; seen: the responder's state in the last
    retained status seen for the instance ('online', 'offline'), or None if none was."""
    topic = protocol.status_topic(conn.status_topic, instance)
    broker = '%s:%d' % (conn.host, conn.port)
    if seen is None:
        what = "no status of a responder for instance '%s' was seen on the broker %s " \
               "(topic %s)" % (instance, broker, topic)
        causes = ("the primary's responder is not enabled (enable = true in its "
                  "[%s][[Responder]]) or its weewxd is not running" % conn.section,
                  "the primary's [[Responder]] has another instance name than '%s' (the "
                  "[[[%s]]] of this station's [[Requester]])" % (instance, instance),
                  "the primary uses another broker (this station uses %s) or another "
                  "status_topic" % broker)
    elif seen == 'offline':
        what = "the responder for instance '%s' is offline (its status on %s at %s)" \
               % (instance, topic, broker)
        causes = ("the primary's weewxd is stopped, or has lost the broker",)
    else:
        what = "the responder for instance '%s' is online (its status on %s at %s) but " \
               "did not answer" % (instance, topic, broker)
        causes = ("the primary's request_topic or response_topic differs from this "
                  "station's (%s, %s)" % (conn.request_topic, conn.response_topic),
                  "the broker's ACL denies those topics to one of the stations",
                  "the answers are larger than the broker's message_size_limit (lower "
                  "max_message_bytes on the primary)")
    return '%s; likely causes, most likely first: %s' % (
        what, '; '.join('(%d) %s' % (n, c) for n, c in enumerate(causes, 1)))
