"""An empty secondary without StdConvert learns its unit system from the first record, which
may arrive after the engine's loop started (no primary yet). The heartbeats' unit system must
not change inside an archive interval, and no record may meet an accumulator of another unit
system: before the fix weewxd died of 'Unit system mismatch'."""

import time

import pytest

from tests.e2e.replication import STARTING_ANYWAY, wait_until
from tests.support.station import STARTED, generate_records, seed_history

pytestmark = pytest.mark.e2e


def test_first_records_in_another_unit_system_arrive_after_the_loop_started(replication):
    rep = replication(requester_options={'startup_max_tries': '1',
                                         'startup_wait_before_retry': '2'})

    def metric_primary(config):
        config['StdConvert']['target_unit'] = 'METRIC'
    rep.primary.edit(metric_primary)
    count = 288
    first = rep.history_end - (count - 1) * 300
    seed_history(rep.primary, first, count, records=list(
        generate_records(first, count, units='METRIC')))
    rep.seeded = count

    def no_stdconvert(config):
        config['Engine']['Services']['process_services'] = ''
    rep.secondary.edit(no_stdconvert)

    sec = rep.start_secondary()               # no primary yet: starts without a catch-up
    sec.wait_for_log(r'driver: no answer to the catch-up; starting anyway|' + STARTING_ANYWAY,
                     timeout=30)
    sec.wait_for_log(STARTED, timeout=15)
    # heartbeats of the empty database's assumed unit system (US) reach the engine's
    # accumulator: a precondition, not a measurement (loop_interval is 2.5 s)
    time.sleep(8)
    assert (rep.secondary.count_records() or 0) == 0
    pri = rep.start_primary()
    wait_until(lambda: (rep.secondary.count_records() or 0) > count, 60,
               'the secondary to catch up from its loop', describe=rep.describe_sync)
    newest = rep.secondary.last_timestamp()
    rep.wait_live(since=newest, n=10)         # and live records, heartbeats turning meanwhile
    assert sec.alive()
    held = rep.finish(pri, [sec])
    assert rep.secondary.last_timestamp() == held
    log = rep.secondary.log_text()
    assert 'Unit system mismatch' not in log
    # the path this test is about was taken: the first records did not meet the engine
    assert "records in unit system 16 are stored directly until the engine's heartbeats " \
        "(unit system 1) change over" in log
