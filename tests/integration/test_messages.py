"""The messages a person meets when replication does not work, read as a user reads them:
from the command line of real stations, through a private broker."""

import re
import time

import pytest

from tests.integration.harness import INSTANCE, add_to_primary, new_record, read_for_live

pytestmark = pytest.mark.integration

PATIENCE = {'startup_max_tries': '1', 'startup_wait_before_retry': '1', 'page_timeout': '3'}
NOTHING_SEEN = ("no status of a responder for instance 'weewx' was seen on the broker "
                "127.0.0.1:%d (topic replicate/status/weewx); likely causes, most likely "
                "first: (1) the primary's responder is not enabled (enable = true in its "
                "[Replicator][[Responder]]) or its weewxd is not running; (2) the primary's "
                "[[Responder]] has another instance name than 'weewx' (the [[[weewx]]] of this "
                "station's [[Requester]]); (3) the primary uses another broker (this station "
                "uses 127.0.0.1:%d) or another status_topic")
SEEN_ONLINE = ("the responder for instance 'weewx' is online (its status on "
               "replicate/status/weewx at 127.0.0.1:%d) but did not answer; likely causes, "
               "most likely first: (1) the primary's request_topic or response_topic differs "
               "from this station's (elsewhere/request, replicate/response)")


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def test_no_responder_request_once_status_and_verify(rig, broker):
    """Nobody serves the instance: request --once and verify exit 4 (not 3: the broker was
    reached), saying that no status of the primary was seen and the likely causes in order;
    the log line of the requester and the status command say the same."""
    secondary = rig.secondary(broker, **PATIENCE)
    seen = NOTHING_SEEN % (broker.port, broker.port)

    result = secondary.run_cli('request', '--once', timeout=60)
    assert result.returncode == 4, result.stderr
    assert last_line(result) == 'error: no responder answered for weewx/wx_binding: ' + seen
    assert re.search(r'WARNING user.mqttreplicate.requester: requester: weewx/wx_binding: no '
                     r'answer from the responder for \d+ s; carrying on with live records: '
                     + re.escape(seen), result.stderr), result.stderr
    assert 'the responder is back' not in result.stderr

    shown = secondary.run_cli('status', timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert 'weewx: ' + seen in shown.stdout, shown.stdout

    verified = secondary.run_cli('verify', '--days', '1', timeout=60)
    assert verified.returncode == 4, verified.stderr
    assert last_line(verified) == ('error: no answer from the responder for weewx/wx_binding '
                                   'within 3 s: ' + seen)


def test_a_responder_seen_online_that_does_not_answer(rig, broker):
    """The primary's status is on the broker, but the requests go elsewhere."""
    primary = rig.primary(broker, count=10)
    rig.start_responder(primary)
    secondary = rig.secondary(broker, request_topic='elsewhere/request', **PATIENCE)
    result = secondary.run_cli('request', '--once', timeout=60)
    assert result.returncode == 4, result.stderr
    assert last_line(result).startswith('error: no responder answered for weewx/wx_binding: '
                                        + SEEN_ONLINE % broker.port), result.stderr
    shown = secondary.run_cli('status', timeout=60)
    assert 'likely causes' not in shown.stdout      # nothing to explain: it is online


def test_verify_on_the_primary_is_refused(rig, broker):
    """A primary has a [[Requester]] too (the installer writes both); verify there would
    compare the primary with itself."""
    primary = rig.primary(broker, count=10)

    def with_requester(config):
        config['Replicator']['Requester'] = {INSTANCE: {'wx_binding': {'type': 'main'}}}
    primary.edit(with_requester)
    responder = rig.start_responder(primary)
    result = primary.run_cli('verify', timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: this station is the primary of instance 'weewx' (its [Replicator][[Responder]] "
        "has enable = true): verify compares a secondary with its primary, so run it on a "
        "secondary"]
    assert responder.counters['digests'] == 0

    # without a [[Requester]], the same sentence (not "section [Replicator][Requester] is
    # missing")
    primary.edit(lambda config: config['Replicator'].pop('Requester'))
    alone = primary.run_cli('verify', timeout=60)
    assert alone.returncode == 2, alone.stderr
    assert alone.stderr.strip().splitlines() == result.stderr.strip().splitlines()


def test_no_responder_is_back_when_the_session_kept_its_statuses(rig, broker):
    """The responder restarted, and published live records, while the secondary was away:
    the statuses its session kept (between the live records), and the retained one, are
    history, not a responder coming back."""
    primary = rig.primary(broker, count=300)
    secondary = rig.secondary(broker)
    responder = rig.start_responder(primary)
    first = secondary.run_cli('request', '--once', timeout=60)
    assert first.returncode == 0, first.stderr
    newest = primary.last_timestamp()
    for restart in range(3):
        time.sleep(1.1)                  # `connected` of the new connection differs
        rig.stop_responder(responder)
        responder = rig.start_responder(primary)
        for n in range(1, 30):
            newest += 300
            add_to_primary(primary, [new_record(newest)])
            responder.publish_live(responder.bindings['weewx/wx_binding'],
                                   *read_for_live(primary, newest))
    again = secondary.run_cli('request', '--once', timeout=60)
    assert again.returncode == 0, again.stderr
    for result in (first, again):
        assert 'the responder is back' not in result.stderr, result.stderr
