"""Several bindings (SPEC 5.4, 6.2): every replicated binding arrives, other bindings before
main, each into the binding the secondary names."""


import pytest
import weewx

from tests.integration.harness import (BINDING, KEY, START, STEP, add_binding, assert_same,
                                       configure, error_lines, live_record, new_record,
                                       wait_until)
from tests.integration.test_live import FakeEngine
from tests.support.conversation import collect, is_catchup_request
from tests.support.mqtt import user_properties
from tests.support.station import compare_databases, seed_history
from user.mqttreplicate.responder import MQTTResponder

pytestmark = pytest.mark.integration

EXTRA_KEY = 'weewx/extra_binding'
OFFSET = 30           # the extra binding's records are 30 s before the main ones


def test_two_bindings(rig, broker, caplog):
    primary = rig.station('primary')
    add_binding(primary, 'extra_binding', 'extra.sdb')
    seed_history(primary, START, 700)
    seed_history(primary, START - OFFSET, 500, binding='extra_binding')
    configure(primary, broker, 'Responder', clientid='two-primary', batch_size=100,
              other_bindings={'extra_binding': {}})
    secondary = rig.station('secondary')
    add_binding(secondary, 'copy_binding', 'copy.sdb')
    configure(secondary, broker, 'Requester', clientid='two-secondary', page_size=150,
              other_bindings={'extra_binding': {'secondary_data_binding': 'copy_binding'}})
    monitor = rig.client(broker)
    monitor.subscribe('replicate/request/weewx')
    monitor.subscribe('replicate/archive/weewx')

    engine = FakeEngine(primary.config_dict())
    service = MQTTResponder(engine, primary.config_dict())
    try:
        assert service.responder.transport.wait_connected(10)
        node = rig.start_requester(secondary)
        node.wait_caught_up(20)
        assert node.requester.replicas[EXTRA_KEY].stored == 500
        assert node.requester.replicas[KEY].stored == 700
        # the first catch-up request (not an ack, a digest, or a live record the responder
        # published when it connected)
        first = collect(monitor, lambda ms: any(is_catchup_request(m) for m in ms), 10,
                        'the first catch-up request')[-1]
        assert user_properties(first)['data_binding'] == EXTRA_KEY     # main last

        # One archive period: a record in each binding, published other binding first.
        ts = START + 700 * STEP
        extra = new_record(ts - OFFSET)
        engine.db_binder.get_manager('extra_binding').addRecord(extra, log_success=False)
        record = new_record(ts)
        engine.db_binder.get_manager(BINDING).addRecord(record, log_success=False)
        engine.dispatch(weewx.Event(weewx.NEW_ARCHIVE_RECORD, record=record,
                                    origin='hardware'))
        # these two, known by their dateTime (the responder also published each binding's
        # newest record when it connected)
        def ours(messages):
            return [m for m in messages if m.topic == 'replicate/archive/weewx'
                    and live_record(m)['dateTime'] in (ts - OFFSET, ts)]
        live = ours(collect(monitor, lambda ms: len(ours(ms)) == 2, 10, 'the two live records'))
        assert [user_properties(m)['data_binding'] for m in live] == [EXTRA_KEY, KEY]
        node.wait_position(ts, timeout=5)
        wait_until(lambda: node.requester.replicas[EXTRA_KEY].position == ts - OFFSET, 5,
                   'the extra record')
        node.stop()
    finally:
        service.shutDown()
        engine.db_binder.close()
    assert_same(primary, secondary)
    diffs = compare_databases(primary, 'extra_binding', secondary, 'copy_binding')
    assert diffs == [], '\n'.join(diffs)
    assert not secondary.db_path('wx_binding').samefile(secondary.db_path('copy_binding'))
    assert error_lines(caplog) == []
