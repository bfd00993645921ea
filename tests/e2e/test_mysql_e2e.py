"""Under weewxd with MariaDB on both stations: a primary running the simulator into its
MariaDB main binding (the responder reading it), a secondary whose main binding is on
MariaDB, with catchup = direct (bulk stores on the engine's own manager) and catchup =
engine (every record through the engine). Both databases on the tests' private server."""

import pytest

from tests.e2e.replication import DAY, INTERVAL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize('catchup', ['direct', 'engine'])
def test_mariadb_on_both_stations_under_weewxd(replication, mariadb, catchup):
    # the simulator has 23 hours to run through before the gate holds it (each record it
    # stores costs WeeWX a few hundred round trips on MySQL)
    rep = replication(history_end=DAY, requester_options={"catchup": catchup})
    mariadb.configure(rep.primary)
    mariadb.configure(rep.secondary)
    # catchup = engine: every record through the engine, its daily summary updated with a
    # few hundred statements each on MySQL (WeeWX's own cost): fewer of them
    first, last_seeded = rep.seed(count=288 if catchup == 'direct' else 24)
    pri = rep.start_primary()
    rep.wait_primary_grows(2)
    held = rep.hold(pri)                  # the catch-up has an end, then live records
    sec = rep.start_secondary()
    position, stored = rep.wait_caught_up(sec)
    assert position == held and stored >= rep.seeded + 2
    rep.release()
    rep.wait_live(since=position, n=3)
    rep.finish(pri, [sec])
    assert rep.secondary.count_records() >= rep.seeded + 3
    log = rep.secondary.log_text()
    assert ('catchup = %s' % catchup) in log
    assert rep.primary.last_timestamp() > last_seeded + 3 * INTERVAL
