"""driver.HeartbeatUnits: the heartbeats' unit system changes only between archive intervals,
and records meet the engine only when both accumulators StdArchive may hold agree."""

import weewx

from user.mqttreplicate.driver import HeartbeatUnits

INTERVAL = 300
T0 = 1700000000 - 1700000000 % INTERVAL


def test_the_unit_system_is_chosen_once_per_interval():
    heartbeat = HeartbeatUnits(INTERVAL)
    database = [weewx.US]
    assert heartbeat.units(T0 + 10, lambda: database[0]) == weewx.US
    database[0] = weewx.METRIC                  # the first record arrived mid-interval
    assert heartbeat.units(T0 + 100, lambda: database[0]) == weewx.US
    assert heartbeat.units(T0 + INTERVAL, lambda: database[0]) == weewx.US   # (start, stop]
    assert heartbeat.units(T0 + INTERVAL + 1, lambda: database[0]) == weewx.METRIC


def test_records_of_a_new_unit_system_wait_until_both_accumulators_have_it():
    heartbeat = HeartbeatUnits(INTERVAL)
    assert heartbeat.compatible(weewx.METRIC)   # before the loop: no accumulator at all
    heartbeat.units(T0 + 10, lambda: weewx.US)
    assert heartbeat.compatible(weewx.US) and not heartbeat.compatible(weewx.METRIC)
    heartbeat.units(T0 + INTERVAL + 10, lambda: weewx.METRIC)
    assert not heartbeat.compatible(weewx.METRIC)     # the previous interval's is US
    heartbeat.units(T0 + 2 * INTERVAL + 10, lambda: weewx.METRIC)
    assert heartbeat.compatible(weewx.METRIC) and not heartbeat.compatible(weewx.US)


def test_after_a_gap_the_last_interval_with_heartbeats_still_counts():
    """StdArchive's old accumulator is the last one that had packets, however long ago."""
    heartbeat = HeartbeatUnits(INTERVAL)
    heartbeat.units(T0 + 10, lambda: weewx.US)
    heartbeat.units(T0 + 5 * INTERVAL + 10, lambda: weewx.METRIC)
    assert not heartbeat.compatible(weewx.METRIC)
