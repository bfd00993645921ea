"""Topologies of docs/topologies.md in-process (their weewxd runs are in
tests/e2e/test_topologies_e2e.py), with the stanzas read from the page
(tests/support/topologies.py).

* The chain with a second broker: the middle station's requester follows the primary on one
  broker, its responder serves the instance under the same name `weewx` on another broker
  (TLS and a password of its own, set in [[Responder]], which wins over [Replicator]).
* A fresh relay station (a secondary that also runs the responder) before its database
  exists.
"""

import logging

import pytest

from tests.integration.harness import (START, STEP, RequesterNode, assert_same, configure,
                                       error_lines, wait_until)
from tests.support.mutual import wait_mutual_knowledge
from tests.support.station import generate_records
from tests.support.topologies import documented_stanza
from tests.support.station import TEST_HEARTBEAT

from user.mqttreplicate import config as cfg
from user.mqttreplicate.responder import Responder

pytestmark = pytest.mark.integration

COUNT = 576                                   # two days of 5-minute records
RELAY_USERS = {'relay': 'relay-secret', 'secondary': 'secondary-pw'}   # as on the page


class KnownBug(AssertionError):
    """The symptom of a known bug (the test is xfail(strict=True, raises=KnownBug))."""


def test_chain_with_a_second_broker(rig, make_broker, caplog):
    lan = make_broker()
    public = make_broker(tls=True, users=RELAY_USERS)
    primary = rig.primary(lan, count=COUNT, batch_size=100)
    rig.start_responder(primary)

    # The middle station: the page's stanza; its requester at the station's broker, its
    # responder at the public one (the page's CA is a public one: the test's CA is added).
    middle = rig.station('middle')
    stanza = documented_stanza(
        'chain-second-broker', host=lan.host, port=lan.port, max_delay=2,
        status_heartbeat=TEST_HEARTBEAT,
        replace={('Responder',): {'host': public.host, 'port': public.tls_port,
                                  'tls': {'ca_certs': public.ca_certs}}})
    middle.edit(lambda config: config.__setitem__('Replicator', stanza))
    middle_options = middle.config_dict()
    served = cfg.parse_responder(middle_options)
    assert (served.connection.port, served.connection.username) == (public.tls_port, 'relay')
    assert served.connection.tls.enable and served.instances == ['weewx']
    assert cfg.parse_requester(middle_options).connection.port == lan.port

    follower = RequesterNode(middle_options)
    rig.nodes.append(follower)
    follower.start()
    follower.wait_caught_up(30)
    relay = Responder(served, middle_options)
    rig.responders.append(relay)
    relay.start()
    assert relay.transport.wait_connected(10), relay.transport.connect_error

    # The tertiary, at the public broker only, follows `weewx` there: the middle's copy.
    tertiary = configure(rig.station('tertiary'), public, 'Requester', tls=True,
                         user='secondary', clientid='tertiary', page_size=200)
    node = rig.start_requester(tertiary)
    node.wait_caught_up(30)
    wait_mutual_knowledge(public, middle, [tertiary])
    node.stop()
    follower.stop()
    assert_same(primary, middle)
    assert_same(primary, tertiary)
    assert tertiary.count_records() == COUNT
    assert 'tertiary' not in lan.log_text()           # it never reached the primary's broker
    assert error_lines(caplog) == []


def test_fresh_relay_station_before_its_database_exists(rig, broker, caplog):
    """A relay's responder starts before its engine created the database (a new station's
    first start): one line at INFO, no error; served once the database exists."""
    caplog.set_level(logging.INFO)
    relay = configure(rig.station('relay'), broker, 'Responder', instance='weewx_relay',
                      clientid='relay')
    assert not relay.db_path().exists() or relay.count_records() == 0
    responder = rig.start_responder(relay)        # its weewxd engine has not created it yet
    # it reads every binding when it connects, and again at each periodic refresh
    responder._queue(('refresh',))
    wait_until(lambda: responder.requests.empty(), 5, 'the refresh')

    # Then the engine creates the database and stores records: the responder serves them.
    with relay.open_manager(initialize=True) as manager:
        manager.addRecord(list(generate_records(START, 50)), log_success=False)
    follower = configure(rig.station('follower'), broker, 'Requester',
                         instance='weewx_relay', clientid='follower', page_size=20)
    node = rig.start_requester(follower)
    node.wait_caught_up(20)
    node.stop()
    assert follower.count_records() == 50
    assert follower.last_timestamp() == START + 49 * STEP

    errors = ['%s: %s' % (r.name, r.getMessage()) for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert errors == []
    assert any('binding weewx_relay/wx_binding has no database yet' in r.getMessage()
               for r in caplog.records)


@pytest.mark.xfail(strict=True, raises=KnownBug, reason=(
    "a requester that asks before a responder that was never online (a fresh relay or "
    "primary, no session on the broker yet) loses its request (no subscriber), and the "
    "responder's first status does not make it ask again: Requester._on_responder_status "
    "takes the first status it sees as telling nothing (seen is None -> reconnected False), "
    "so the catch-up waits for page_timeout (the driver: startup_max_tries x "
    "startup_wait_before_retry, 20 s by default); seen with a relay and its tertiary "
    "started together"))
def test_catch_up_begins_when_a_responder_comes_online_for_the_first_time(rig, broker):
    primary = rig.primary(broker, count=200, clientid='fresh-primary')
    secondary = rig.secondary(broker, page_size=50, page_timeout=30)
    spy = rig.client(broker)
    spy.subscribe('replicate/request/weewx')
    node = rig.start_requester(secondary)
    spy.expect('replicate/request/weewx', 10)      # its request: nobody subscribed yet
    rig.start_responder(primary)
    try:
        wait_until(lambda: node.requester.progress_count > 0, 3,
                   'the catch-up to begin within 3 s of the responder coming online')
    except AssertionError as e:
        raise KnownBug(str(e))
    node.wait_caught_up(20)
    node.stop()
    assert_same(primary, secondary)
