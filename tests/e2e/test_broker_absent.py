"""No broker when the stations start: the primary archives as usual; replication begins when
the broker shows up."""

import re

import pytest

from tests.e2e.replication import (PRIMARY_CONNECTED, SECONDARY_CONNECTED, STARTING_ANYWAY,
                                   wait_until)
from tests.support.measure import Fault

pytestmark = pytest.mark.e2e


def test_broker_starts_late(replication, fault_report):
    fault = Fault(fault_report, 'no broker when both stations start',
                  'the primary archives normally (no blocking connect); replication starts '
                  'with the broker')
    rep = replication(broker_started=False,
                      requester_options={'startup_max_tries': '1',
                                         'startup_wait_before_retry': '2'})
    rep.seed(days=2)
    pri = rep.start_primary()                 # 'Starting main packet loop': no blocking connect
    rep.wait_primary_grows(100)               # archiving normally
    assert pri.alive()
    pri.wait_for_log(r'cannot reach broker', timeout=10)

    # The secondary starts without a broker too: it gives up waiting for its start-up
    # catch-up after startup_max_tries * startup_wait_before_retry and runs its engine.
    sec = rep.start_secondary()
    sec.wait_for_log(STARTING_ANYWAY, timeout=30)
    sec.wait_for_log(r'Starting main packet loop', timeout=10)
    assert rep.secondary.count_records() == 0
    rep.wait_primary_grows(50)

    rep.broker.start()
    pri.wait_for_log(PRIMARY_CONNECTED, timeout=15)
    sec.wait_for_log(SECONDARY_CONNECTED, timeout=15)
    # The catch-up now runs from the driver's loop; then live records follow.
    wait_until(lambda: rep.secondary.count_records() > rep.seeded + 150, 60,
               'the secondary to catch up', describe=rep.describe_sync)
    newest = rep.secondary.last_timestamp()
    rep.wait_live(since=newest, n=20)

    held = rep.finish(pri, [sec], fault=fault)
    assert rep.secondary.last_timestamp() == held

    # Nothing fatal on the primary while the broker was missing: one engine, warnings only.
    log = rep.primary.log_text()
    assert len(re.findall(r'Starting main packet loop', log)) == 1
    assert not re.search(r'CRITICAL|Traceback|retrying\.\.\.', log)
