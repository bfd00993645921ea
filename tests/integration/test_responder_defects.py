"""Defects of the responder found by reading the code: a status ticker that one exception
ended silently, and protocol-1 answers that kept a failed database connection for ever."""

import json
import threading

import pytest

from tests.integration.harness import KEY, START, STEP, error_lines, wait_until
from tests.support.mqtt import user_properties
from user.mqttreplicate import database

pytestmark = pytest.mark.integration

STATUS = 'replicate/status/weewx'


def test_the_status_ticker_survives_a_failure(rig, broker, caplog):
    """Before, one exception in the ticker ended status publishing and the periodic refresh
    while is_alive() still said all was well."""
    primary = rig.primary(broker, count=10)
    responder = rig.start_responder(primary)
    watcher = rig.client(broker)
    watcher.subscribe(STATUS)
    watcher.expect(STATUS, timeout=10)
    real_status = responder.status
    failures = []

    def failing_status():
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError('status failed')
        return real_status()

    responder.status = failing_status          # (the ticker looks at it every second)
    wait_until(lambda: len(failures) == 2, 10)
    assert responder.ticker.is_alive() and responder.is_alive()
    responder.counters['acks'] += 1            # something new to tell
    status = json.loads(watcher.expect(STATUS, timeout=10).payload)
    assert status['state'] == 'online' and status['counters']['acks'] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
    assert errors == ['responder: status not published: RuntimeError: status failed']


def test_is_alive_tells_when_a_worker_thread_ended(rig, broker):
    primary = rig.primary(broker, count=10)
    responder = rig.start_responder(primary)
    assert responder.is_alive()
    responder.requests.put(None)               # what ends a worker
    wait_until(lambda: not responder.workers[0].is_alive(), 5)
    assert not responder.is_alive()


def test_protocol1_answers_reopen_a_failed_connection(rig, broker, monkeypatch, caplog):
    """A connection that failed (a MySQL server that went away) made every later protocol-1
    answer fail until weewxd restarted. Now the failed read is tried again on a new
    connection, and the answer is complete."""
    primary = rig.primary(broker, count=250, throttle_count=100, throttle_sleep=0.1)
    opened = []
    real_init = database.SourceDatabase.__init__

    def init(self, mgr_dict):
        real_init(self, mgr_dict)
        if threading.current_thread().name != 'responder-protocol1':
            return
        opened.append(self)
        if len(opened) == 1:                    # its first connection breaks for good
            def gone(*args, **kwargs):
                raise OSError('server has gone away')
            self.read_page = gone

    monkeypatch.setattr(database.SourceDatabase, '__init__', init)
    rig.start_responder(primary)
    legacy = rig.client(broker)
    legacy.subscribe('replicate/response/legacy-node')
    legacy.publish('replicate/request/weewx', b'0', user_properties={'data_binding': KEY},
                   ResponseTopic='replicate/response/legacy-node')
    stamps = []
    while len(stamps) < 250:
        message = legacy.expect('replicate/response/legacy-node', timeout=10)
        assert user_properties(message) == {'data_binding': KEY}
        stamps.append(json.loads(message.payload)['dateTime'])
    assert stamps == [START + i * STEP for i in range(250)]
    assert legacy.drain(0.5) == []
    errors = error_lines(caplog)
    assert len(errors) == 1 and 'server has gone away' in errors[0] \
        and '(try 1; again in' in errors[0]
    assert len(opened) == 2


def test_weectl_report_run_does_not_start_a_second_responder(rig, broker, caplog):
    """`weectl report run` on a primary loads every service in a DummyEngine: a responder
    started there had the primary's client id and threw the running one off the broker.
    It is not started outside weewxd; in weewxd's StdEngine it is."""
    import logging

    import weewx.engine
    from user.mqttreplicate.responder import MQTTResponder
    caplog.set_level(logging.INFO, logger='user.mqttreplicate')
    primary = rig.primary(broker, count=10)
    config_dict = primary.config_dict()
    dummy = weewx.engine.DummyEngine.__new__(weewx.engine.DummyEngine)
    service = MQTTResponder(dummy, config_dict)
    assert service.responder is None
    assert any('not started outside weewxd (DummyEngine)' in r.getMessage()
               for r in caplog.records)

    class Engine(weewx.engine.StdEngine):
        def __init__(self):                     # only what a service's bind() needs
            self.callbacks = {}
    service = MQTTResponder(Engine(), config_dict)
    try:
        assert service.responder is not None
    finally:
        service.shutDown()
