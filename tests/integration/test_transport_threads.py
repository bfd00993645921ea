"""transport.Transport against a real broker: one writer per socket, and the loop's lifecycle.

paho writes to the socket from the thread that calls publish() unless its own loop thread
runs; two threads then send from one packet queue and, on a partial send, interleave their
bytes. These tests watch which threads write, and what happens when the loop ends."""

import threading

import pytest

from tests.support.waiting import wait_until
from user.mqttreplicate import config as cfg
from user.mqttreplicate.transport import Transport

pytestmark = pytest.mark.integration


def _options(broker, clientid):
    return cfg.ConnectionOptions(role='responder', clientid=clientid, host=broker.host,
                                 port=broker.port, min_delay=1, max_delay=2)


def test_only_the_loop_thread_writes_to_the_socket(broker):
    received = []
    sink = Transport(_options(broker, 'one-writer-sink'), ['one/writer/#'], received.append,
                     name='sink')
    transport = Transport(_options(broker, 'one-writer'), [], lambda message: None,
                          name='writer')
    writers = set()
    real_write = transport.client._packet_write

    def watched_write(*args, **kwargs):
        writers.add(threading.current_thread())
        return real_write(*args, **kwargs)

    transport.client._packet_write = watched_write
    sink.start()
    transport.start()
    try:
        assert sink.wait_connected(10) and transport.wait_connected(10)
        wait_until(lambda: sink.client.is_connected(), 5)
        loop_thread = transport.thread
        assert loop_thread is not None and loop_thread is not threading.current_thread()

        def publish_many(n):
            for i in range(200):
                transport.publish('one/writer/%d' % n, b'x' * 2000, qos=1)

        threads = [threading.Thread(target=publish_many, args=(n,), name='publisher-%d' % n)
                   for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wait_until(lambda: len(received) == 800, 20)
    finally:
        transport.stop()
        sink.stop()
    # every packet went out through the loop thread: no publisher wrote to the socket
    assert writers == {loop_thread}, [t.name for t in writers]
    assert len(received) == 800


def test_a_loop_that_ended_is_revived_and_stop_ends_it(broker):
    transport = Transport(_options(broker, 'revived'), [], lambda message: None,
                          name='revived')
    transport.start()
    try:
        assert transport.wait_connected(10)
        assert transport.is_alive()
        # what an exception escaping paho's loop leaves behind: no loop thread
        transport.client.loop_stop()
        assert not transport.is_alive()
        assert transport.revive()
        assert transport.is_alive()
        wait_until(lambda: transport.connected.is_set(), 10)
        transport.publish('revived/x', b'1', qos=1).wait_for_publish(5)
    finally:
        transport.stop()
    assert not transport.is_alive()
    assert transport.revive() is False      # a stopped transport stays stopped
