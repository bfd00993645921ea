"""Network faults between real weewxd stations and the broker (a TCP proxy in between, see
tests/support/proxy.py): the secondary's connection cut in the middle of a page of its
start-up catch-up and in the middle of live traffic, stalled for a while, and the primary's
connection cut while it publishes. The primary never notices (no restart, no error), the
secondary ends equal to it, and each side's status shows what the other has."""

import pytest

from tests.e2e.replication import CATCHING_UP, MAIN_KEY, wait_until
from tests.support.measure import Fault
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.e2e


def through(station, proxy):
    """Make a station connect through proxy (takes effect at its next start)."""
    def fn(config):
        config['Replicator']['host'] = proxy.host
        config['Replicator']['port'] = str(proxy.port)
    station.edit(fn)


def cut_and_reconnect(proc, proxy, armed_bytes=None, direction='down'):
    before = proxy.connections
    if armed_bytes is None:
        assert proxy.cut() >= 1
    else:
        proxy.cut_after(armed_bytes, direction)
        wait_until(lambda: not proxy.armed, 30, 'the armed cut')
    wait_until(lambda: proxy.connections > before and proxy.open_connections >= 1, 20,
               'a reconnection', describe=proc.describe)


@pytest.mark.slow
def test_connections_cut_during_catchup_and_live(replication, fault_report):
    fault = Fault(fault_report,
                  "weewxd secondary's connection cut twice in the middle of pages of a "
                  '6,000-record start-up catch-up, twice during live records (once inside a '
                  "message), stalled during live records; the weewxd primary's connection cut "
                  'once',
                  'clean logs on both; 4 + 1 cuts; equal')
    rep = replication(requester_options={'page_size': '1000', 'page_timeout': '5'})
    sec_proxy = TcpProxy(rep.broker.host, rep.broker.port)
    pri_proxy = TcpProxy(rep.broker.host, rep.broker.port)
    try:
        through(rep.secondary, sec_proxy)
        through(rep.primary, pri_proxy)
        rep.seed(count=6000)
        pri = rep.start_primary()
        sec = rep.start_secondary()
        sec.wait_for_log(CATCHING_UP % MAIN_KEY, timeout=30)
        wait_until(lambda: (rep.secondary.count_records() or 0) >= 1000, 60,
                   'the first page', interval=0.02)
        # in the middle of pages of the start-up catch-up (stored in bulk)
        cut_and_reconnect(sec, sec_proxy, 15000)
        at_cut = rep.secondary.count_records()
        cut_and_reconnect(sec, sec_proxy, 25000)
        assert at_cut < rep.seeded, 'the catch-up ended before the cut'
        position, _ = rep.wait_caught_up(sec, timeout=90)
        rep.wait_live(since=position, n=10)

        # live traffic: the secondary's connection cut twice (once inside a message), then
        # stalled for 3 s; the primary's connection cut once
        cut_and_reconnect(sec, sec_proxy)
        rep.wait_live(since=rep.secondary.last_timestamp(), n=10)
        cut_and_reconnect(sec, sec_proxy, 300)
        rep.wait_live(since=rep.secondary.last_timestamp(), n=10)
        sec_proxy.pause()
        stalled = rep.secondary.last_timestamp()
        rep.wait_primary_grows(20)
        sec_proxy.resume()
        rep.wait_live(since=stalled, n=30)
        cut_and_reconnect(pri, pri_proxy)
        rep.wait_live(since=rep.secondary.last_timestamp(), n=20)
        assert pri.alive() and sec.alive()

        rep.finish(pri, [sec], fault=fault)
        assert sec_proxy.cuts == 4 and pri_proxy.cuts == 1
    finally:
        sec_proxy.stop()
        pri_proxy.stop()
