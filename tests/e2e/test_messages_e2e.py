"""The messages of weewxd's start-up, read in the logs of real weewxd: a configuration error
stops the secondary with one message (no chained traceback) naming option and section;
misspelt options are warned about once on both stations; a secondary whose archive interval
is not the primary's says so once."""

import re

import pytest

from tests.e2e.replication import INSTANCE, MAIN_KEY
from tests.support.station import STARTED

pytestmark = pytest.mark.e2e

STOPPED = r'Unable to load driver: (.*)'


def both_stanzas(config):
    config['MQTTReplicate'] = dict(config['Replicator'])


def misspelt_binding(config):
    config['Replicator']['Requester'][INSTANCE]['wx_binding']['secondary_data_binding'] = \
        'wx_bindng'


def main_elsewhere(config):
    config['DataBindings']['copy_binding'] = dict(config['DataBindings']['wx_binding'])
    config['Replicator']['Requester'][INSTANCE]['wx_binding']['secondary_data_binding'] = \
        'copy_binding'


@pytest.mark.parametrize('edit, message', [
    (both_stanzas, "MQTTReplicate: sections [Replicator] and [MQTTReplicate] are both present: "
                   "keep one of them ([MQTTReplicate] is read only when there is no "
                   "[Replicator])"),
    (misspelt_binding, "MQTTReplicate: option 'secondary_data_binding' in section "
                       "[Replicator][Requester][weewx][wx_binding]: there is no data binding "
                       "'wx_bindng' in [DataBindings] (did you mean 'wx_binding'?)"),
    (main_elsewhere, "MQTTReplicate: option 'secondary_data_binding' in section "
                     "[Replicator][Requester][weewx][wx_binding]: the binding of type = main "
                     "is stored by the engine, in [StdArchive] data_binding = wx_binding, but "
                     "it names 'copy_binding'; make them the same (or give this binding "
                     "type = secondary)"),
], ids=['both-stanzas', 'unknown-binding', 'main-not-the-engines'])
def test_a_configuration_error_stops_weewxd_with_one_message(replication, edit, message):
    rep = replication()
    rep.secondary.edit(edit)
    sec = rep.start_secondary()
    assert sec.wait(timeout=60) == 4            # weewx.IO_ERROR: the driver did not load
    log = rep.secondary.log_text()
    assert re.search(STOPPED, log).group(1) == message, log
    assert 'During handling of the above exception' not in log, log
    assert 'The above exception was the direct cause' not in log, log
    # the traceback weewxd logs for a driver that does not load is its own, and short
    assert len(re.findall(r'CRITICAL|ERROR', log)) <= 20, log


def test_misspelt_options_and_another_archive_interval_are_warned_about_once(replication):
    rep = replication(primary_options={'workerz': '2'},
                      requester_options={'page_sise': '100', 'archive_interval': '600',
                                         'enabel': 'true'})
    rep.seed(days=1)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    sec.wait_for_log(STARTED, timeout=60)
    interval = sec.wait_for_log(
        r"requester: %s: the primary's archive interval is 300 s \(its records' interval\), "
        r"this station's is 600 s \(option 'archive_interval' in section "
        r"\[Replicator\]\[Requester\]\); set archive_interval = 300 there" % MAIN_KEY,
        timeout=60)
    assert interval
    sec.stop()
    pri.stop()
    secondary, primary = rep.secondary.log_text(), rep.primary.log_text()
    for log, line in (
            (primary, "option 'workerz' in section [Replicator][Responder] is unknown and "
                      "ignored (did you mean 'workers'?)"),
            (secondary, "option 'page_sise' in section [Replicator][Requester] is unknown and "
                        "ignored (did you mean 'page_size'?)"),
            (secondary, "option 'enabel' in section [Replicator][Requester] is unknown and "
                        "ignored (did you mean 'enable'?)")):
        assert log.count('WARNING user.mqttreplicate.config: config: ' + line) == 1, log
    assert secondary.count("the primary's archive interval is") == 1


def test_no_primary_at_start_says_what_was_seen_and_starts(replication):
    """The broker is there, the primary is not: weewxd on the secondary says, once, that no
    status of a responder was seen and why that may be, then runs its engine."""
    rep = replication(requester_options={'startup_max_tries': '1',
                                         'startup_wait_before_retry': '2'})
    sec = rep.start_secondary()
    line = sec.wait_for_log(
        r"requester: %s: no answer from the responder for \d+ s; carrying on with live "
        r"records: no status of a responder for instance 'weewx' was seen on the broker "
        r"127\.0\.0\.1:%d \(topic replicate/status/weewx\); likely causes, most likely first: "
        r"\(1\) the primary's responder is not enabled" % (MAIN_KEY, rep.broker.port),
        timeout=30)
    assert line
    sec.wait_for_log(r'driver: no answer to the catch-up; starting anyway', timeout=10)
    sec.wait_for_log(STARTED, timeout=15)
    sec.stop()
    assert rep.secondary.log_text().count('no answer from the responder') == 1
