"""A small synchronous paho-mqtt (MQTT v5) client for tests, built by the package's
transport.new_client(): the same under paho-mqtt 1.6 and 2.x.

    with MqttClient(broker) as c:                   # connects (waits for CONNACK)
        c.subscribe('a/#')                          # waits for SUBACK
        c.publish('a/b', b'x', qos=1, user_properties={'protocol': '2'})   # waits for PUBACK
        msg = c.expect('a/b', timeout=5)            # paho MQTTMessage
        props = user_properties(msg)                # {'protocol': '2'}

Connection refusals raise :class:`ConnectRefused` (with the MQTT reason code).
"""

import queue
import ssl
import threading
import time
import uuid
from typing import Dict, List, Optional

from user.mqttreplicate import transport


class ConnectRefused(ConnectionError):
    """The broker answered CONNACK with a failure reason code."""

    def __init__(self, reason_code):
        super().__init__('connection refused: %s (%s)' % (reason_code, int(reason_code.value)))
        self.reason_code = reason_code


def user_properties(msg) -> Dict[str, str]:
    """The MQTT v5 user properties of a received message as a dict (last value wins)."""
    props = getattr(msg, 'properties', None)
    return dict(getattr(props, 'UserProperty', None) or [])


def publish_properties(user_props: Optional[Dict[str, str]] = None, **fields):
    """PUBLISH properties: user_props plus e.g. ResponseTopic='x', CorrelationData=b'id'."""
    if user_props:
        fields['UserProperty'] = [(str(k), str(v)) for k, v in user_props.items()]
    return transport.properties('PUBLISH', **fields)


topic_matches = transport.topic_matches


class MqttClient:
    """A paho client with its network loop in a background thread and blocking helpers."""

    def __init__(self, broker=None, *, host: Optional[str] = None, port: Optional[int] = None,
                 client_id: Optional[str] = None, username: Optional[str] = None,
                 password: Optional[str] = None, tls: bool = False,
                 ca_certs: Optional[str] = None, certfile: Optional[str] = None,
                 keyfile: Optional[str] = None, clean_start: bool = True,
                 session_expiry: Optional[int] = None, keepalive: int = 30,
                 connect: bool = True, timeout: float = 10.0):
        self.host = host or (broker.host if broker else '127.0.0.1')
        if port is None and broker is not None:
            port = broker.tls_port if tls else broker.port
        self.port = port
        self.client_id = client_id or 'test-%s' % uuid.uuid4().hex[:12]
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.timeout = timeout
        self.messages: queue.Queue = queue.Queue()     # paho MQTTMessage
        self._connack = queue.Queue()
        self._acks: Dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.disconnects: List = []

        self.client = transport.new_client(self.client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            if broker is not None and ca_certs is None:
                ca_certs = broker.ca_certs
            context = ssl.create_default_context(cafile=ca_certs)
            if certfile:
                context.load_cert_chain(certfile, keyfile)
            self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_ack
        self.client.on_publish = self._on_publish
        self.puback_codes: Dict[int, object] = {}     # mid -> PUBACK reason code (QoS 1)
        self.client.on_unsubscribe = self._on_ack
        self._started = False
        if connect:
            self.connect()

    # -- callbacks (paho thread) ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._connack.put((reason_code, flags, properties))
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if not self.connected.is_set():
            self._connack.put((None, reason_code, None))     # dropped before CONNACK
        self.connected.clear()
        self.disconnects.append(reason_code)

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.puback_codes[mid] = reason_code

    def _on_ack(self, client, userdata, mid, *rest):
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        event.set()

    # -- operations ----------------------------------------------------------------------------

    def connect(self):
        """Connect and wait for CONNACK; raise ConnectRefused on a failure reason code."""
        props = transport.properties('CONNECT')
        if self.session_expiry is not None:
            props.SessionExpiryInterval = self.session_expiry
        self.client.connect(self.host, self.port, keepalive=self.keepalive,
                            clean_start=self.clean_start, properties=props)
        if not self._started:
            self.client.loop_start()
            self._started = True
        try:
            reason_code, flags, properties = self._connack.get(timeout=self.timeout)
        except queue.Empty:
            self.abort()
            raise TimeoutError('no CONNACK from %s:%s within %s s'
                               % (self.host, self.port, self.timeout))
        if reason_code is None:            # e.g. TLS client certificate refused
            self._stop_loop()
            raise ConnectionError('connection to %s:%s closed before CONNACK (%s)'
                                  % (self.host, self.port, flags))
        if reason_code.is_failure:
            self._stop_loop()
            raise ConnectRefused(reason_code)
        self.session_present = bool(flags.session_present)
        return reason_code

    def _wait_ack(self, mid: int, what: str) -> None:
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        if not event.wait(self.timeout):
            raise TimeoutError('no %s for mid %s within %s s' % (what, mid, self.timeout))
        with self._lock:
            self._acks.pop(mid, None)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        result, mid = self.client.subscribe(topic, qos=qos)
        if result != 0:
            raise RuntimeError('subscribe(%r) failed: paho error %s' % (topic, result))
        self._wait_ack(mid, 'SUBACK')

    def unsubscribe(self, topic: str) -> None:
        result, mid = self.client.unsubscribe(topic)
        self._wait_ack(mid, 'UNSUBACK')

    def publish(self, topic: str, payload=b'', qos: int = 1, retain: bool = False,
                user_properties: Optional[Dict[str, str]] = None, properties=None,
                wait: bool = True, **property_fields):
        """Publish; with wait (default) block until PUBACK/PUBCOMP (or sent, for QoS 0).

        Mosquitto acknowledges a publish that its ACL denies with reason code 135 (Not
        authorized): see ``puback_codes[info.mid]``.
        """
        if properties is None and (user_properties or property_fields):
            properties = publish_properties(user_properties, **property_fields)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if wait:
            info.wait_for_publish(self.timeout)
            if not info.is_published():
                raise TimeoutError('publish to %r not acknowledged within %s s'
                                   % (topic, self.timeout))
        return info

    def get(self, timeout: Optional[float] = None):
        """The next received message; raise TimeoutError when none arrives in time."""
        try:
            return self.messages.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise TimeoutError('no message within %s s' % (self.timeout if timeout is None
                                                            else timeout)) from None

    def expect(self, topic_filter: str = '#', timeout: Optional[float] = None):
        """The next message whose topic matches topic_filter (others are discarded)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('no message on %r' % topic_filter)
            msg = self.get(remaining)
            if topic_matches(topic_filter, msg.topic):
                return msg

    def drain(self, quiet: float = 0.2) -> list:
        """Collect messages until none arrives for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def disconnect(self) -> None:
        """Clean DISCONNECT (no last will), wait until it is sent, stop the loop."""
        if self._started and self.connected.is_set():
            before = len(self.disconnects)
            self.client.disconnect()
            deadline = time.monotonic() + self.timeout
            while len(self.disconnects) == before and time.monotonic() < deadline:
                time.sleep(0.01)
        self._stop_loop()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT (the broker publishes the last will)."""
        self._stop_loop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    close = disconnect

    def _stop_loop(self) -> None:
        if self._started:
            self.client.loop_stop()
            self._started = False

    def __enter__(self) -> 'MqttClient':
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
