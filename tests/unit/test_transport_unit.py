"""Unit tests of faults.RateLimitedLog (used by transport) with a fake monotonic clock (no
broker, no sleeping), of Transport's callbacks without I/O, and of transport.NetworkLoop
over a fake paho client."""

import logging
import threading
import types

import pytest

from user.mqttreplicate import config, faults, transport

LOGGER = 'tests.unit.ratelimit'


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """Replace the time module seen by faults with one whose monotonic() we drive."""
    fake = FakeClock()
    monkeypatch.setattr(faults, "time", types.SimpleNamespace(monotonic=fake))
    return fake


@pytest.fixture
def ratelog(clock, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return faults.RateLimitedLog(logging.getLogger(LOGGER), interval=300.0)


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_default_interval():
    assert faults.RateLimitedLog(logging.getLogger(LOGGER)).interval == 300.0


def test_first_message_is_logged_with_level_and_args(ratelog, caplog):
    ratelog(logging.WARNING, 'connect', '%s: cannot reach broker %s:%d', 'requester',
            'localhost', 1883)
    assert messages(caplog) == ['requester: cannot reach broker localhost:1883']
    assert caplog.records[-1].levelno == logging.WARNING


def test_repeats_within_the_interval_are_held_back(ratelog, caplog, clock):
    ratelog(logging.ERROR, 'loop', 'failed %d', 1)
    for i in range(5):
        clock.advance(59)          # 295 s in total: still inside the interval
        ratelog(logging.ERROR, 'loop', 'failed %d', i + 2)
    assert messages(caplog) == ['failed 1']


def test_next_message_after_the_interval_carries_the_suppressed_count(ratelog, caplog, clock):
    ratelog(logging.ERROR, 'loop', 'failed %s', 'a')
    for _ in range(3):
        clock.advance(10)
        ratelog(logging.ERROR, 'loop', 'failed %s', 'b')
    clock.advance(300)
    ratelog(logging.ERROR, 'loop', 'failed %s', 'c')
    assert messages(caplog) == ['failed a', 'failed c (3 similar messages suppressed)']
    assert caplog.records[-1].levelno == logging.ERROR


def test_suppressed_count_is_reported_once(ratelog, caplog, clock):
    ratelog(logging.INFO, 'k', 'one')
    ratelog(logging.INFO, 'k', 'held')
    clock.advance(300)
    ratelog(logging.INFO, 'k', 'two')
    clock.advance(300)
    ratelog(logging.INFO, 'k', 'three')
    assert messages(caplog) == ['one', 'two (1 similar messages suppressed)', 'three']


def test_interval_is_measured_from_the_last_logged_message(ratelog, caplog, clock):
    ratelog(logging.INFO, 'k', 'first')         # t = 0
    clock.advance(299.9)
    ratelog(logging.INFO, 'k', 'held')          # t = 299.9: held, does not restart the window
    clock.advance(0.1)
    ratelog(logging.INFO, 'k', 'second')        # t = 300: logged
    clock.advance(299)
    ratelog(logging.INFO, 'k', 'held again')    # t = 599: held (window restarted at 300)
    assert messages(caplog) == ['first', 'second (1 similar messages suppressed)']


def test_kinds_are_limited_independently(ratelog, caplog, clock):
    ratelog(logging.WARNING, 'connect', 'connect 1')
    ratelog(logging.WARNING, 'disconnect', 'disconnect 1')
    ratelog(logging.WARNING, 'connect', 'connect 2')
    ratelog(logging.WARNING, 'connect', 'connect 3')
    ratelog(logging.ERROR, 'message', 'message 1')
    ratelog(logging.WARNING, 'disconnect', 'disconnect 2')
    assert messages(caplog) == ['connect 1', 'disconnect 1', 'message 1']
    clock.advance(300)
    ratelog(logging.WARNING, 'disconnect', 'disconnect 3')
    ratelog(logging.WARNING, 'connect', 'connect 4')
    ratelog(logging.ERROR, 'message', 'message 2')
    assert messages(caplog)[3:] == ['disconnect 3 (1 similar messages suppressed)',
                                    'connect 4 (2 similar messages suppressed)',
                                    'message 2']


def test_custom_interval(clock, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ratelog = faults.RateLimitedLog(logging.getLogger(LOGGER), interval=5)
    ratelog(logging.INFO, 'k', 'a')
    clock.advance(4.99)
    ratelog(logging.INFO, 'k', 'b')
    clock.advance(0.01)
    ratelog(logging.INFO, 'k', 'c')
    assert messages(caplog) == ['a', 'c (1 similar messages suppressed)']


def test_percent_in_arguments_is_safe(ratelog, caplog, clock):
    ratelog(logging.ERROR, 'm', 'error on %s: %s', 'topic/100%', 'bad %d value')
    ratelog(logging.ERROR, 'm', 'error on %s: %s', 'x', 'y')
    clock.advance(300)
    ratelog(logging.ERROR, 'm', 'error on %s: %s', 'topic/50%', '%s')
    assert messages(caplog) == ['error on topic/100%: bad %d value',
                                'error on topic/50%: %s (1 similar messages suppressed)']


def test_concurrent_callers_log_once_and_count_everything(ratelog, caplog, clock):
    threads, per_thread = 8, 200
    start = threading.Barrier(threads)

    def hammer():
        start.wait()
        for _ in range(per_thread):
            ratelog(logging.WARNING, 'k', 'busy')

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert messages(caplog) == ['busy']
    clock.advance(300)
    ratelog(logging.WARNING, 'k', 'after')
    assert messages(caplog)[-1] == 'after (%d similar messages suppressed)' % (
        threads * per_thread - 1)


def _transport(on_message=lambda message: None):
    options = config.ConnectionOptions(role='requester', clientid='unit-test-client',
                                       host='broker.invalid', port=1883)
    return transport.Transport(options, [], on_message)     # creates a paho client, no I/O


def test_transport_connect_failures_are_rate_limited(clock, caplog):
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate.transport')
    t = _transport()
    assert isinstance(t.errors, faults.RateLimitedLog)
    for _ in range(10):
        t._on_connect_fail(t.client, None)
        clock.advance(20)
    lines = [r.getMessage() for r in caplog.records if 'cannot reach broker' in r.getMessage()]
    assert lines == ['mqttreplicate: cannot reach broker broker.invalid:1883; retrying']
    assert t.connect_error == 'cannot reach broker broker.invalid:1883'
    clock.advance(300)
    t._on_connect_fail(t.client, None)
    lines = [r.getMessage() for r in caplog.records if 'cannot reach broker' in r.getMessage()]
    assert lines[-1].endswith('retrying (9 similar messages suppressed)')


def test_transport_message_handler_errors_are_contained_and_rate_limited(clock, caplog):
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate.transport')

    def broken(message):
        raise KeyError('boom')

    t = _transport(broken)
    message = types.SimpleNamespace(topic='replicate/request/weewx')
    for _ in range(5):
        t._on_message(t.client, None, message)      # must not raise
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert 'replicate/request/weewx' in errors[0].getMessage()
    assert 'KeyError' in errors[0].getMessage()


@pytest.mark.parametrize('stanza', ['Replicator', 'MQTTReplicate'])
def test_refused_credentials_name_the_options_and_the_stanza_in_use(stanza):
    options = config.ConnectionOptions(role='requester', clientid='unit-test-client',
                                       host='broker.invalid', username='someone',
                                       section=stanza)
    t = transport.Transport(options, [], lambda message: None)
    refused = transport.reason_code('CONNACK', 135)       # not authorized
    t._on_connect(t.client, None, None, refused, None)
    assert t.refused
    assert ("as user 'someone', client id 'unit-test-client': check the options 'username' "
            "and 'password' of [%s]" % stanza) in t.connect_error


def test_subscribed_only_once_the_broker_acknowledged_every_subscription(caplog):
    """wait_subscribed() means what others publish reaches this client: set by a SUBACK
    without a failure (not by the CONNACK), cleared by a disconnect."""
    options = config.ConnectionOptions(role='responder', clientid='unit-test-client',
                                       host='broker.invalid', port=1883)
    t = transport.Transport(options, ['replicate/request/#'], lambda message: None)
    t.client.subscribe = lambda topics: None        # no I/O
    success = transport.reason_code('CONNACK', 0)
    t._on_connect(t.client, None, types.SimpleNamespace(session_present=False), success, None)
    assert t.connected.is_set() and not t.wait_subscribed(0)
    refused = transport.reason_code('SUBACK', 135)
    t._on_subscribe(t.client, None, 1, [refused], None)
    assert not t.wait_subscribed(0)
    t._on_subscribe(t.client, None, 2, [transport.reason_code('SUBACK', 1)], None)
    assert t.wait_subscribed(0)
    t._on_disconnect(t.client, None, None, success, None)
    assert not t.wait_subscribed(0)


class FakeClient:
    """What NetworkLoop uses of paho's client: loop_start() starts a thread that runs until
    loop_stop() (or until it 'crashes')."""

    def __init__(self):
        self._thread = None
        self.ended = threading.Event()
        self.starts = 0

    def loop_start(self):
        self.starts += 1
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self.ended.wait, daemon=True)
        self._thread.start()

    def loop_stop(self):
        self.ended.set()
        self._thread.join()
        self._thread = None


def test_network_loop_start_stop_is_alive_and_revive(caplog):
    caplog.set_level(logging.DEBUG, logger='user.mqttreplicate.transport')
    client, stopping = FakeClient(), threading.Event()
    loop = transport.NetworkLoop(client, 'unit', faults.RateLimitedLog(transport.log),
                                 stopping)
    assert not loop.is_alive() and loop.thread is None
    loop.start()
    assert loop.is_alive() and loop.thread.name == 'unit-mqtt'
    assert loop.revive() and client.starts == 1          # running: nothing to do
    client.ended.set()                                   # the loop ended by itself
    loop.thread.join(5)
    assert not loop.is_alive()
    assert loop.revive() and loop.is_alive() and client.starts == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == \
        ['unit: the MQTT network loop stopped; restarting it']
    assert loop.stop(5) and not loop.is_alive() and stopping.is_set()
    assert loop.revive() is False and client.starts == 2  # a stopped loop stays stopped


def test_network_loop_stop_does_not_wait_longer_than_its_timeout(caplog):
    client = FakeClient()
    client.loop_stop = lambda: None                      # paho's loop that never ends
    loop = transport.NetworkLoop(client, 'stuck', faults.RateLimitedLog(transport.log),
                                 threading.Event())
    loop.start()
    assert loop.stop(0.1) is False
    assert 'stuck: MQTT thread did not stop within 0.1 s' in caplog.text
    client.ended.set()
