"""A thin, typed wrapper over paho-mqtt (1.6 or 2.x): MQTT v5, asynchronous connect, reconnect with
back-off, persistent session, TLS, credentials, last will, and loop_forever in paho's own
background thread (loop_start).

One writer per socket: paho writes to the socket from the thread that calls publish() unless
its own loop thread runs (client.py _packet_queue). With loop_start() every other thread
only queues a packet and wakes the loop, so the loop thread is the only one that ever
writes; two threads never interleave their bytes on one (TLS) socket.

Nothing here knows about weather records. The responder and the requester give it the
topics to subscribe, a message callback and a will, and call publish() and ack().

With a shared_secret (SPEC 5.7) every message sent here is signed (user property sig: the
last will, the retained final messages and everything publish() sends), and every message
received is checked before the message callback sees it: one without a valid signature is
acknowledged, counted, logged (at most once per kind and interval) and dropped.

The only module that imports paho. paho-mqtt 1.6 (Debian 12's python3-paho-mqtt) and 2.x
differ in what their callbacks get; new_client() hides that: its callbacks are called as
paho 2 calls them with CallbackAPIVersion.VERSION2, whichever paho is installed.
"""

import collections
import logging
import re
import ssl
import struct
import sys
import threading

try:
    import paho.mqtt
except ImportError:
    paho = None
try:
    import paho.mqtt.client as mqtt
    from paho.mqtt import reasoncodes
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:                    # no paho, or one without MQTT v5: see paho_problem()
    mqtt = None

from . import protocol
from .config import ConfigError
from .faults import RateLimitedLog, is_termination  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "your credentials are not welcome"
REFUSED_CODES = (134, 135, 138)   # bad user name or password, not authorized, banned
RECEIVE_MAXIMUM = 64


# --- paho-mqtt 1.6 and 2.x -------------------------------------------------------------------

PAHO_OLDEST = (1, 6)
PAHO_FIX = ("install it with 'apt install python3-paho-mqtt' (Debian 12, Raspberry Pi OS "
            "bookworm) or 'pip install paho-mqtt==2.2.0' into WeeWX's Python")
ConnectFlags = collections.namedtuple('ConnectFlags', 'session_present')
DisconnectFlags = collections.namedtuple('DisconnectFlags', 'is_disconnect_packet_from_server')
# what paho 1.6 hands on_disconnect instead of a reason code (MQTT_ERR_*) -> DISCONNECT reason
# code, as paho 2 converts them; any other is 128, "Unspecified error"
DISCONNECT_REASONS = {0: 0, 2: 130, 16: 141}    # success, protocol error, keep alive timeout


class PahoError(ConfigError):
    """The installed paho-mqtt cannot work here. One sentence: the version found, the fix."""


def paho_version():
    """The installed paho-mqtt's version as a tuple of ints; () if there is none."""
    text = getattr(paho.mqtt, '__version__', '') if paho else ''
    return tuple(int(n) for n in re.findall(r'\d+', text)[:3])


def paho_problem():
    """Why the installed paho-mqtt cannot work here, in one sentence; None if it can."""
    version = paho_version()
    if paho is None:
        return 'paho-mqtt is not installed: MQTTReplicate needs 1.6 or later; ' + PAHO_FIX
    if version < PAHO_OLDEST or mqtt is None or not hasattr(mqtt, 'MQTTv5'):
        return ('paho-mqtt %s is too old: MQTTReplicate needs 1.6 or later (MQTT v5); %s'
                % ('.'.join(map(str, version)) or '(version unknown)', PAHO_FIX))
    return None


def require_paho():
    """Raise PahoError if the installed paho-mqtt cannot work here."""
    problem = paho_problem()
    if problem:
        raise PahoError(problem)


def is_paho1():
    """True under paho-mqtt 1.x (no CallbackAPIVersion, no manual_ack)."""
    return not hasattr(mqtt, 'CallbackAPIVersion')


def new_client(client_id, manual_ack=False):
    """A paho MQTT v5 client whose callbacks are called as paho 2 calls them (VERSION2), and
    which has ack() for manual_ack, with paho-mqtt 1.6 as with 2.x."""
    require_paho()
    if is_paho1():
        return Client16(client_id, manual_ack)
    return mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                       client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)


def reason_code(packet_type, code):
    """code (an int, or either paho's reason code) as a reason code with what paho 2's has:
    value, is_failure, str(). packet_type: PacketTypes' name, e.g. 'CONNACK'."""
    if is_paho1():
        return ReasonCode16(getattr(PacketTypes, packet_type),
                            identifier=int(getattr(code, 'value', code)))
    if isinstance(code, int):
        return reasoncodes.ReasonCode(getattr(PacketTypes, packet_type), identifier=code)
    return code


def properties(packet_type, **fields):
    """MQTT v5 properties of a packet type (PacketTypes' name, e.g. 'PUBLISH'), from fields
    named as paho names them (UserProperty=[(name, value)], CorrelationData=b'...')."""
    props = Properties(getattr(PacketTypes, packet_type))
    for name, value in fields.items():
        setattr(props, name, value)
    return props


def topic_matches(topic_filter, topic):
    """True if topic matches the MQTT topic filter (with + and # wildcards)."""
    return mqtt.topic_matches_sub(topic_filter, topic)


class ReasonCode16(reasoncodes.ReasonCodes if mqtt is not None else object):
    """paho 1.6's ReasonCodes with paho 2's is_failure."""

    @property
    def is_failure(self):
        return self.value >= 0x80


def _adapted(name, adapt):
    """A property of Client16 whose setter gives paho 1.6 adapt(callback) instead."""
    base = getattr(mqtt, 'Client', None)
    if base is None:
        return None
    base = getattr(base, name)
    return property(base.fget, lambda client, func: base.fset(client, func and adapt(func)))


def _on_connect16(func):
    def on_connect(client, userdata, flags, code, props=None):
        # a CONNACK of 1 (MQTT 3's "unacceptable protocol version") comes as the int 132
        func(client, userdata, ConnectFlags(bool(flags.get('session present'))),
             reason_code('CONNACK', code), props)
    return on_connect


def _on_disconnect16(func):
    def on_disconnect(client, userdata, code, props=None):
        from_server = not isinstance(code, int)          # else one of paho's MQTT_ERR_*
        if not from_server:
            code = DISCONNECT_REASONS.get(code, 128)
        func(client, userdata, DisconnectFlags(from_server), reason_code('DISCONNECT', code),
             props)
    return on_disconnect


def _on_subscribe16(func):
    def on_subscribe(client, userdata, mid, codes, props=None):
        func(client, userdata, mid, [reason_code('SUBACK', c) for c in codes], props)
    return on_subscribe


def _on_publish16(func):
    def on_publish(client, userdata, mid):
        func(client, userdata, mid, reason_code('PUBACK', client.publish_reasons.pop(mid, 0)),
             None)
    return on_publish


class Client16(mqtt.Client if mqtt is not None else object):
    """paho-mqtt 1.6's client with what transport uses of paho 2's: callbacks called as
    VERSION2 calls them, the PUBACK's reason code for on_publish, manual_ack and ack()."""

    on_connect = _adapted('on_connect', _on_connect16)
    on_disconnect = _adapted('on_disconnect', _on_disconnect16)
    on_subscribe = _adapted('on_subscribe', _on_subscribe16)
    on_publish = _adapted('on_publish', _on_publish16)

    def __init__(self, client_id, manual_ack=False):
        super().__init__(client_id=client_id, protocol=mqtt.MQTTv5)
        self.manual_ack = manual_ack
        self.publish_reasons = {}          # mid -> reason code of its PUBACK or PUBCOMP

    def _handle_pubackcomp(self, cmd):
        # 1.6 reads the reason code but does not pass it on: kept here for on_publish
        packet = self._in_packet['packet']
        if len(packet) > 2 and self.on_publish is not None:
            self.publish_reasons[struct.unpack('!H', packet[:2])[0]] = packet[2]
        return super()._handle_pubackcomp(cmd)

    # 1.6 takes only a ConnectionError for a lost connection: any other OSError (a TLS
    # alert, an unreachable host) would end its loop thread; 2.x takes them all, so do we
    def _sock_recv(self, bufsize):
        try:
            return super()._sock_recv(bufsize)
        except (BlockingIOError, ConnectionError):
            raise
        except OSError as e:
            raise ConnectionAbortedError(str(e)) from e

    def _sock_send(self, buf):
        try:
            return super()._sock_send(buf)
        except (BlockingIOError, ConnectionError):
            raise
        except OSError as e:
            raise ConnectionAbortedError(str(e)) from e

    # 1.6 acknowledges a QoS 1 message as soon as on_message returns (PUBACK), a QoS 2 one
    # on its PUBREL (PUBCOMP); with manual_ack only ack() sends them
    def _send_puback(self, mid):
        return mqtt.MQTT_ERR_SUCCESS if self.manual_ack else super()._send_puback(mid)

    def _send_pubcomp(self, mid):
        return mqtt.MQTT_ERR_SUCCESS if self.manual_ack else super()._send_pubcomp(mid)

    def ack(self, mid, qos):
        """Acknowledge a message received with manual_ack, as paho 2's ack() does."""
        if self.manual_ack and qos == 1:
            return super()._send_puback(mid)
        if self.manual_ack and qos == 2:
            return super()._send_pubcomp(mid)
        return mqtt.MQTT_ERR_SUCCESS


class NetworkLoop:
    """paho's network loop (loop_forever in paho's own thread, started by loop_start) with
    the shape of worker.Worker: start / stop(timeout) / is_alive, and revive() for a loop
    that an exception escaping paho ended. Its thread is paho's, named '<name>-mqtt': the
    only one that ever writes to the socket while it runs."""

    def __init__(self, client, name, errors, stopping):
        self.client = client
        self.name = name
        self.errors = errors           # the transport's RateLimitedLog
        self.stopping = stopping       # the transport's: set once it is being stopped
        self.thread = None

    def start(self):
        # paho's loop_forever(retry_first_connection=True) in paho's thread
        self.client.loop_start()
        self.thread = getattr(self.client, '_thread', None)
        if self.thread is not None:
            self.thread.name = '%s-mqtt' % self.name

    def stop(self, timeout=10.0):
        """End the loop and wait at most timeout seconds for its thread. True if it ended.
        loop_stop() tells the loop to end whatever state a connection is in (a CONNACK
        that arrives after a disconnect() would otherwise keep it running); it joins
        without a timeout, so it runs on a thread of its own."""
        self.stopping.set()
        if self.thread is None:
            return True
        threading.Thread(target=self.client.loop_stop, name='%s-stop' % self.name,
                         daemon=True).start()
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning('%s: MQTT thread did not stop within %g s', self.name, timeout)
            return False
        return True

    def is_alive(self):
        return self.thread is not None and self.thread.is_alive()

    def revive(self):
        """Restart the loop if it ended although nobody stopped it (an exception escaped
        paho). True if it runs. Until then paho has no loop thread, and a publish() writes
        from its caller's thread: the one window in which two threads could write, closed
        within a second by the role's monitor."""
        if self.stopping.is_set() or self.is_alive():
            return not self.stopping.is_set()
        self.errors(logging.ERROR, 'loop', '%s: the MQTT network loop stopped; restarting it',
                    self.name)
        self.start()                     # paho cleared its thread when the loop ended
        return True


class Transport:
    """One MQTT v5 client with its network loop in a background thread."""

    def __init__(self, options, subscriptions, on_message, on_connected=None, will=None,
                 manual_ack=False, name='mqttreplicate', on_rejected=None):
        """options: a config.ConnectionOptions.
        subscriptions: list of topic filters, subscribed with options.subscribe_qos on every
            connection, or (topic filter, qos) for another QoS.
        on_message(message): called in the loop thread for every message (with a
            shared_secret, for every message with a valid signature).
        on_connected(session_present): called in the loop thread after each connection.
        will: (topic, payload) published retained by the broker if we vanish.
        on_rejected(message): called in the loop thread for every message refused here (no
            valid signature), after it was counted in rejected_signatures and acknowledged."""
        self.options = options
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_rejected = on_rejected
        self.secret = options.shared_secret or None
        self.rejected_signatures = 0   # messages received without a valid signature
        self.will = will
        self.manual_ack = manual_ack
        self.name = name
        self.connected = threading.Event()
        self.subscribed = threading.Event()     # the broker acknowledged the subscriptions
        self.stopping = threading.Event()
        self.connect_error = None      # text of the last failed connection, for the CLI
        self.refused = False           # the broker refused our credentials
        self.errors = RateLimitedLog(log)
        self.client = self._make_client()
        self.loop = NetworkLoop(self.client, name, self.errors, self.stopping)

    # --- lifecycle ---------------------------------------------------------------------------

    def _make_client(self):
        o = self.options
        client = new_client(o.clientid, self.manual_ack)
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls.enable:
            context = ssl.create_default_context(cafile=o.tls.ca_certs)
            if o.tls.certfile:
                context.load_cert_chain(o.tls.certfile, o.tls.keyfile)
            if o.tls.certs_required == ssl.CERT_NONE:
                context.check_hostname = False      # before verify_mode, or ssl refuses
            context.verify_mode = o.tls.certs_required
            if o.tls.tls_version == 'tlsv1.3':
                context.minimum_version = ssl.TLSVersion.TLSv1_3
            elif o.tls.tls_version == 'tlsv1.2':
                context.minimum_version = ssl.TLSVersion.TLSv1_2
            if o.tls.ciphers:
                context.set_ciphers(o.tls.ciphers)
            client.tls_set_context(context)
        if self.will is not None:
            payload = self._payload_bytes(self.will[1])
            props = None
            if self.secret is not None:
                # MQTT v5 will properties carry user properties: the broker publishes them
                # with the will, so the will is signed like everything else
                props = properties('WILLMESSAGE', UserProperty=[
                    (protocol.SIG, protocol.sign(self.secret, payload, None, ()))])
            client.will_set(self.will[0], payload, qos=1, retain=True, properties=props)
        client.reconnect_delay_set(o.min_delay, max(o.min_delay, o.max_delay))
        client.max_inflight_messages_set(100)
        if o.log_mqtt:
            client.enable_logger(logging.getLogger(__name__ + '.paho'))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    def start(self):
        """Start connecting in the background. Never blocks, never raises for a missing
        broker."""
        o = self.options
        # ReceiveMaximum: unacknowledged messages the broker may send us at once (our memory)
        props = properties('CONNECT', SessionExpiryInterval=o.session_expiry_interval,
                           ReceiveMaximum=RECEIVE_MAXIMUM)
        self.client.connect_async(o.host, o.port, o.keepalive, bind_address=o.bind_address,
                                  clean_start=False, properties=props)
        self.loop.start()

    def revive(self):
        """Restart the network loop if it ended although nobody stopped it. True if it runs.
        Called now and then by the role's own monitor (see NetworkLoop.revive)."""
        return self.loop.revive()

    def stop(self, final_messages=(), timeout=10.0):
        """Publish final (retained) messages if connected, disconnect, and end the network
        loop (waiting at most timeout seconds). The loop thread sends what was queued
        before the DISCONNECT, in order."""
        self.stopping.set()
        if self.connected.is_set():
            for topic, payload in final_messages:
                try:
                    self.publish(topic, payload, qos=1, retain=True)
                except Exception as e:
                    if is_termination(e):
                        raise
                    pass
        try:
            self.client.disconnect()
        except Exception as e:
            if is_termination(e):
                raise
            pass
        self.loop.stop(timeout)

    def is_alive(self):
        return self.loop.is_alive()

    @property
    def thread(self):
        """paho's loop thread while it runs (None before start())."""
        return self.loop.thread

    def wait_connected(self, timeout):
        return self.connected.wait(timeout)

    def wait_subscribed(self, timeout):
        """Connected, and the broker has acknowledged every subscription: what others
        publish to them from now on reaches this client."""
        return self.subscribed.wait(timeout)

    # --- callbacks (loop thread) -------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = reason_code.value in REFUSED_CODES
            self.connect_error = 'the broker at %s:%d refused the connection: %s' % (
                self.options.host, self.options.port, reason_code)
            if self.refused:
                self.connect_error += (" (as user '%s', client id '%s': check the options "
                                       "'username' and 'password' of [%s] and the "
                                       "broker's password file and ACL)"
                                       % (self.options.username or '', self.options.clientid,
                                          self.options.section))
            self.errors(logging.ERROR, 'connect', '%s: %s', self.name, self.connect_error)
            return
        self.connect_error = None
        self.refused = False
        log.info('%s: connected to %s:%d as %s (session present: %s)', self.name,
                 self.options.host, self.options.port, self.options.clientid,
                 flags.session_present)
        if self.subscriptions:
            client.subscribe([topic if isinstance(topic, tuple)
                              else (topic, self.options.subscribe_qos)
                              for topic in self.subscriptions])
        else:
            self.subscribed.set()
        self.connected.set()
        if self.on_connected is not None:
            try:
                self.on_connected(flags.session_present)
            except Exception as e:
                log.exception('%s: error after connecting: %s', self.name, e)

    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its `except OSError`: the exception says why (TLS, refused...)
        reason = sys.exc_info()[1]
        self.connect_error = 'cannot reach broker %s:%d%s' % (
            self.options.host, self.options.port, ': %s' % reason if reason else '')
        self.errors(logging.WARNING, 'connect', '%s: %s; retrying', self.name,
                    self.connect_error)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            self.errors(logging.ERROR, 'subscribe', '%s: the broker refused a subscription '
                        '(%s): check its ACL', self.name, ', '.join(refused))
        else:
            self.subscribed.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # Mosquitto acknowledges a publish its ACL denies with 135 "Not authorized"
        if reason_code is not None and getattr(reason_code, 'is_failure', False):
            self.errors(logging.ERROR, 'publish', '%s: the broker refused a message: %s; '
                        'check its ACL', self.name, reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if was_connected and not self.stopping.is_set():
            self.errors(logging.WARNING, 'disconnect', '%s: disconnected from broker: %s',
                        self.name, reason_code)

    def _on_message(self, client, userdata, message):
        if self.secret is not None and not self._signed(message):
            return
        try:
            self.on_message(message)
        except Exception as e:
            self.errors(logging.ERROR, 'message', '%s: error handling a message on %s: %s: %s',
                        self.name, message.topic, type(e).__name__, e)
            log.debug('traceback', exc_info=True)
            # unacknowledged, it would hold a slot of the broker's in-flight window for ever
            self.ack(message)

    def _signed(self, message):
        """True if the message carries a valid signature; otherwise acknowledge, count and
        log it, and return False. Nothing else has looked at the message yet."""
        properties = getattr(message, 'properties', None)
        try:
            protocol.check_signature(self.secret, message.payload,
                                     getattr(properties, 'CorrelationData', None),
                                     getattr(properties, 'UserProperty', None) or ())
            return True
        except protocol.SignatureError as e:
            kind = e.kind
        except Exception as e:         # e.g. properties of unexpected types: not signed by us
            if is_termination(e):
                raise
            kind = 'wrong'
        self.rejected_signatures += 1
        self.errors(logging.WARNING, 'signature-' + kind,
                    '%s: rejected a message without a valid signature on %s (%s signature)',
                    self.name, message.topic, kind)
        self.ack(message)
        if self.on_rejected is not None:
            try:
                self.on_rejected(message)
            except Exception as e:
                if is_termination(e):
                    raise
                log.debug('%s: error counting a rejected message: %s', self.name, e)
        return False

    # --- sending -----------------------------------------------------------------------------

    @staticmethod
    def _payload_bytes(payload):
        """The bytes paho would send for payload (so the signature covers exactly those)."""
        if payload is None:
            return b''
        if isinstance(payload, str):
            return payload.encode('utf-8')
        if isinstance(payload, (int, float)) and not isinstance(payload, bool):
            return str(payload).encode('ascii')
        return bytes(payload)

    def publish(self, topic, payload, user_properties=(), correlation=None, response_topic=None,
                expiry=None, qos=None, retain=False):
        """Queue a message. Thread safe. Returns the paho MQTTMessageInfo."""
        props = properties('PUBLISH')
        pairs = [(str(k), str(v)) for k, v in user_properties or ()]
        if self.secret is not None:
            payload = self._payload_bytes(payload)
            pairs.append((protocol.SIG, protocol.sign(self.secret, payload, correlation,
                                                      pairs)))
        if pairs:
            props.UserProperty = pairs
        if correlation is not None:
            props.CorrelationData = correlation
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if expiry is not None:
            props.MessageExpiryInterval = int(expiry)
        qos = self.options.publish_qos if qos is None else qos
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def ack(self, message):
        """Acknowledge a QoS 1/2 message received with manual_ack. Call it once per message."""
        if self.manual_ack and message.qos > 0:
            try:
                self.client.ack(message.mid, message.qos)
            except Exception as e:
                if is_termination(e):
                    raise
                log.debug('%s: ack failed: %s', self.name, e)
