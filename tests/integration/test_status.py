"""Acks and status (SPEC 5.6): each side knows what the other has, and says when it is gone."""

import pytest

from tests.integration.harness import (KEY, START, STEP, JsonWatcher, assert_same,
                                       error_lines, retained_json, wait_until)
from tests.support.measure import Fault, in_process
from tests.support.mutual import wait_mutual_knowledge

pytestmark = pytest.mark.integration

RESPONDER_STATUS = 'replicate/status/weewx'


def test_acks_and_retained_status(rig, broker, caplog):
    primary = rig.primary(broker, count=1000, batch_size=200)
    # default clientid: stable, derived from the station
    secondary = rig.secondary(broker, clientid=None, page_size=300)
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    newest = START + 999 * STEP
    clientid = node.clientid
    assert clientid.startswith('mqttreplicate-requester-')

    watcher = JsonWatcher(rig.client(broker))
    watcher.client.subscribe(RESPONDER_STATUS)

    def acknowledged(status):
        ack = (status.get('nodes') or {}).get(clientid, {}).get(KEY)
        return ack is not None and ack.get('last') == newest

    status = watcher.wait(RESPONDER_STATUS, acknowledged, timeout=10)
    assert status['state'] == 'online' and status['role'] == 'responder'
    assert status['instance'] == 'weewx'
    assert status['bindings'][KEY]['newest'] == newest
    ack = status['nodes'][clientid][KEY]
    assert ack['lag'] == 0 and ack['count'] == 1000
    assert responder.counters['acks'] >= 1

    mine = 'replicate/status/weewx/%s' % clientid
    # (the requester publishes the status that says so right after the ack: wait for it)
    def own_status_up_to_date():
        status = retained_json(broker, mine)
        mine_now = ((status.get('bindings') or {}).get(KEY) or {}).get('newest')
        return status if mine_now == newest else None
    own = wait_until(own_status_up_to_date, 10, "the requester's status to show its newest")
    assert own['state'] == 'online' and own['role'] == 'requester'
    assert own['clientid'] == clientid
    assert own['bindings'][KEY]['newest'] == newest
    assert own['bindings'][KEY]['lag'] == 0
    # and each knows what the other has: the primary's newest record, acknowledged
    wait_mutual_knowledge(broker, primary, [secondary])
    own = retained_json(broker, mine)
    assert own['bindings'][KEY]['acknowledged'] == newest
    assert own['bindings'][KEY]['primary_newest'] == newest
    assert own['bindings'][KEY]['catching_up'] is False

    # Clean stops leave "offline" behind, retained.
    node.stop()
    assert retained_json(broker, mine)['state'] == 'offline'
    rig.stop_responder(responder)
    assert retained_json(broker, RESPONDER_STATUS)['state'] == 'offline'
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_last_wills_after_kill9(rig, broker, caplog, fault_report):
    """Both roles, run from the command line and killed with SIGKILL: the broker publishes
    their wills, retained {"state": "offline"}. Started again, they know each other again."""
    fault = Fault(fault_report, 'both roles killed with SIGKILL',
                  'retained `{"state": "offline"}` wills; started again, equal')
    primary = rig.primary(broker, count=50, clientid='will-primary')
    secondary = rig.secondary(broker, clientid='will-secondary')
    watcher = JsonWatcher(rig.client(broker))
    watcher.client.subscribe('replicate/status/#')
    respond = primary.start_cli('respond')
    # (a request sent before the responder ever subscribed would be lost: see
    # test_catchup.py::test_requester_started_before_the_responder)
    respond.wait_for_output('responding for', timeout=30)
    request = secondary.start_cli('request')
    mine = 'replicate/status/weewx/will-secondary'
    try:
        # online, and the secondary has acknowledged everything
        status = watcher.wait(RESPONDER_STATUS,
                              lambda s: s.get('state') == 'online'
                              and ((s.get('nodes') or {}).get('will-secondary') or {})
                              .get(KEY, {}).get('last') == START + 49 * STEP, timeout=30)
        watcher.wait(mine, lambda s: s.get('state') == 'online', timeout=10)
    finally:
        request.kill9()
        respond.kill9()
    stored = [status['nodes']['will-secondary'][KEY]['count']]    # the requester's counter
    watcher.wait(mine, lambda s: s.get('state') == 'offline', timeout=10)
    assert retained_json(broker, mine)['state'] == 'offline'
    assert retained_json(broker, RESPONDER_STATUS)['state'] == 'offline'

    # Both again: nothing new to replicate, and each knows what the other has.
    respond = primary.start_cli('respond')
    respond.wait_for_output('responding for', timeout=30)
    request = secondary.start_cli('request')
    try:
        with fault.settling(lambda: in_process(
                primary, secondary, caplog, stored=sum(stored),
                primary_output=respond.output_text(since_start=False))) as figures:
            statuses = wait_mutual_knowledge(broker, primary, [secondary])
            stored.append(statuses[RESPONDER_STATUS]['nodes']['will-secondary'][KEY]['count'])
    finally:
        request.stop()
        respond.stop()
    figures.assert_clean()
    assert_same(primary, secondary)


def test_status_after_a_restart_with_nothing_new(rig, broker):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker, clientid='restarted')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    node.stop()
    rig.stop_responder(responder)
    mine = 'replicate/status/weewx/restarted'
    assert retained_json(broker, mine)['state'] == 'offline'

    # Both come back; the secondary is up to date.
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    watcher = JsonWatcher(rig.client(broker))
    watcher.client.subscribe('replicate/status/#')
    watcher.wait(mine, lambda s: s.get('state') == 'online', timeout=10)
    watcher.wait(RESPONDER_STATUS, lambda s: ((s.get('nodes') or {}).get('restarted') or {})
                 .get(KEY, {}).get('last') == START + 99 * STEP, timeout=10)


def test_clientid_with_a_wildcard(rig, broker):
    """A clientid with '+' or '#' makes the requester's will, status and response topics
    invalid: the broker drops every CONNECT, and nothing said why. It must be a configuration
    error naming clientid. (Found by this suite; fixed in ecc7ed4.)"""
    from user.mqttreplicate import config as cfg
    secondary = rig.secondary(broker, clientid='node+1')
    with pytest.raises(cfg.ConfigError, match='clientid'):
        cfg.parse_requester(secondary.config_dict())
