"""One writer per MQTT connection (SPEC 6.1): however many threads of the responder publish
at once, its connection carries a valid MQTT stream.

The responder publishes from several threads: the engine thread (live records), its
catch-up workers (pages) and its status ticker, while its loop thread answers what it
receives. paho writes to the socket from whichever thread calls publish() unless its own
loop thread runs (client.py _packet_queue); two threads then take packets from one queue
and send them, and once a send comes back short their bytes interleave: a corrupt stream
that the broker disconnects for (or waits on for ever), and with TLS two threads writing
one SSL connection ("bad length", or records out of order).

Sends come back short when the network is slower than the publishers. Here the responder
reaches the broker's TLS listener through a proxy at 32 KiB/s with small socket buffers,
and at once: a catch-up of 750 records (pages of 300 in compressed batches of 60, an
eighth of a MiB), a live record every 50 ms (1 KiB each), the status (at most once a
second), and 60 other secondaries, already caught up, acknowledging the live records once
a second each, as requesters do (the loop thread answers every ack; every ack changes the
status). The requester and the other secondaries talk to the broker directly.

Without one writer this fails within seconds (the broker logs a malformed packet, a
protocol error or an SSL error for the responder, or paho an SSL error). With it: one
connection from start to end, and every record, live ones included, stored on the
secondary."""

import logging
import re
import socket
import threading
import time

import pytest

from tests.integration.harness import (BINDING, KEY, START, STEP, assert_same, error_lines,
                                       new_record, wait_until)
from tests.support.proxy import TcpProxy

from user.mqttreplicate import database, protocol

pytestmark = pytest.mark.integration

RATE = 32 * 1024                # bytes a second through the proxy, each way
BUFFER = 8192                   # the proxy's socket buffers
SEND_BUFFER = 2048              # the responder's (Linux doubles it, to at least 4.5 KiB)
HISTORY = 1000                  # records the requester catches up with (enough, packed,
                                # for well over 200 KiB through the link with the rest)
PAGE = 350                      # records a page (three pages, two catch-up workers)
LIVE_EVERY = 0.05               # seconds between two live records
PEERS = 60                      # other secondaries acknowledging the live records


class ViaTls:
    """Stands in for the broker in rig.primary: the station connects to the broker's TLS
    listener through a proxy."""

    def __init__(self, proxy, broker):
        self.proxy = proxy
        self.broker = broker

    def connection_options(self, tls=False, user=None):
        options = self.broker.connection_options(tls=True, user=user)
        options.update(host=self.proxy.host, port=self.proxy.port)
        return options


@pytest.fixture
def slow_proxy(tls_broker):
    """A TcpProxy to tls_broker's TLS listener at RATE bytes a second with small buffers.
    Named before `rig` by the test: set up first, torn down after the rig stopped
    everything."""
    proxy = TcpProxy(tls_broker.host, tls_broker.tls_port, rate=RATE, buffer=BUFFER)
    yield proxy
    proxy.stop()


class Engine(threading.Thread):
    """The primary's engine thread: every `every` seconds a new archive record is committed
    and published live, as MQTTResponder.new_archive_record does."""

    def __init__(self, primary, responder, first_ts, every):
        super().__init__(name='engine', daemon=True)
        self.primary = primary
        self.responder = responder
        self.ts = first_ts
        self.every = every
        self.last = None
        self.count = 0
        self.halt = threading.Event()
        self.error = None

    def run(self):
        binding = self.responder.bindings[KEY]
        try:
            # like weewxd: one database connection, kept for the engine's life
            with self.primary.open_manager(BINDING) as manager:
                while not self.halt.is_set():
                    manager.addRecord(new_record(self.ts), log_success=False)
                    record = protocol.compact(manager.getRecord(self.ts))
                    prev = database.previous_timestamp(manager, self.ts)
                    self.responder.publish_live(binding, record, prev)
                    self.last = self.ts
                    self.count += 1
                    self.ts += STEP
                    self.halt.wait(self.every)
        except Exception as e:          # pragma: no cover - reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(10)
        assert self.error is None, 'the engine thread failed: %r' % (self.error,)
        return self.last


class Peers(threading.Thread):
    """Secondaries that are caught up: each acknowledges the newest live record once a
    second (SPEC 5.6), as a requester does; one MQTT client speaks for all of them."""

    def __init__(self, client, engine, count):
        super().__init__(name='peers', daemon=True)
        self.client = client
        self.engine = engine
        self.count = count
        self.acks = 0
        self.halt = threading.Event()
        self.error = None

    def run(self):
        topic = protocol.request_topic('replicate/request', 'weewx')
        try:
            while not self.halt.wait(1.0 / self.count):
                last = self.engine.last
                if last is None:
                    continue
                node = 'peer-%02d' % (self.acks % self.count)
                payload = protocol.encode_json({KEY: {'last': last, 'count': self.acks}})
                self.client.publish(topic, payload, qos=1, wait=False, user_properties={
                    'data_binding': KEY, 'protocol': protocol.PROTOCOL, 'node': node,
                    'op': protocol.OP_ACK})
                self.acks += 1
        except Exception as e:          # pragma: no cover - reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(10)
        assert self.error is None, 'the peers failed: %r' % (self.error,)


def responder_lines(caplog, start):
    """The transport's log lines about the responder's connection that begin with start."""
    return [r.getMessage() for r in caplog.records
            if r.name == 'user.mqttreplicate.transport'
            and r.getMessage().startswith('responder: ' + start)]


def broken_connection_lines(broker, clientid):
    """Lines of the broker's log saying it dropped clientid's connection, or could not read
    it (a malformed packet, a protocol error, a TLS error...)."""
    text = broker.log_text()
    lines = [line for line in text.splitlines()
             if clientid in line and re.search(r'disconnected|[Bb]ad socket|[Ee]rror', line)]
    lines += [line for line in text.splitlines() if 'OpenSSL Error' in line]
    return lines


def test_concurrent_publishers_over_a_slow_tls_link(slow_proxy, rig, tls_broker, caplog):
    """A catch-up, live records and status messages published at once over a slow TLS link:
    the responder's connection is never broken, and the secondary ends equal to the
    primary, live records included."""
    log = logging.getLogger(__name__)
    proxy = slow_proxy
    primary = rig.primary(ViaTls(proxy, tls_broker), count=HISTORY, batch_size=60,
                          page_size=PAGE, workers=2)
    secondary = rig.secondary(tls_broker, page_size=PAGE)
    started = time.monotonic()
    responder = rig.start_responder(primary)
    assert responder.conn.tls.enable and responder.conn.port == proxy.port
    clientid = responder.conn.clientid
    # On a slow uplink the sender's socket buffer fills and its sends come back short. On
    # loopback the kernel grows it to megabytes (the round trip is so short) and takes every
    # send whole: give the responder's socket the small buffer of a slow link.
    sock = responder.transport.client.socket()
    assert sock is not None, 'the responder has no socket'
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def intact():
        """Fails at once if the responder's connection broke (a corrupt stream may also
        just stall it: then the wait below times out)."""
        broken = broken_connection_lines(tls_broker, clientid)
        problems = error_lines(caplog, logging.WARNING)
        assert broken == [] and problems == [], \
            "the responder's connection broke; the broker logged:\n%s\nand here:\n%s" % (
                '\n'.join(broken) or '(nothing)', '\n'.join(problems) or '(nothing)')

    engine = Engine(primary, responder, START + HISTORY * STEP, LIVE_EVERY)
    peers = Peers(rig.client(tls_broker), engine, PEERS)
    engine.start()
    peers.start()
    try:
        node = rig.start_requester(secondary)
        wait_until(lambda: intact() or node.caught_up(), 60, 'the requester to catch up',
                   interval=0.2, describe=lambda: 'stored %d' % node.requester.progress_count)
        # live records go on for a while after the catch-up, with their acks and statuses
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            intact()
            time.sleep(0.2)
    finally:
        peers.stop()
        last = engine.stop()
    node.wait_position(last, 30)
    intact()
    summary = ('%d records sent in pages and %d live, %d acks, %d bytes up and %d down through '
               'the proxy, %d connection(s), in %.1f s'
               % (responder.counters['records_sent'], engine.count, responder.counters['acks'],
                  proxy.bytes_up, proxy.bytes_down, proxy.connections,
                  time.monotonic() - started))
    log.info(summary)
    assert responder_lines(caplog, 'disconnected') == [], summary
    assert len(responder_lines(caplog, 'connected to')) == 1 and proxy.connections == 1, \
        summary
    assert responder.counters['records_sent'] >= HISTORY, summary
    assert engine.count >= 50 and peers.acks >= 100 and proxy.bytes_up > 200 * 1024, \
        'too little went through the slow link: ' + summary
    node.stop()
    assert secondary.count_records(BINDING) == HISTORY + engine.count
    assert secondary.last_timestamp(BINDING) == last
    assert_same(primary, secondary)
    assert error_lines(caplog, logging.WARNING) == []
