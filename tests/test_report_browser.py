"""The Replication page in headless Chromium (Debian's chromium), from status fixtures:
what a reader sees once the page's script ran, the stale mark included. The same pages
made by weewxd are opened in tests/e2e/test_report_e2e.py."""

import time

import pytest

from tests.support.pages import CHROMIUM, browse, element_text, is_hidden, page_text, \
    render_report
from tests.support.status_fixture import primary_status, secondary_status, write_status

pytestmark = pytest.mark.skipif(not CHROMIUM, reason='chromium is not installed '
                                '(scripts/setup installs it)')


def when(ts):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(ts))


def open_page(tmp_path, status, generated, interval=300):
    root = tmp_path / 'station'
    if status is not None:
        write_status(root / 'archive', status)
    page = tmp_path / 'index.html'
    page.write_text(render_report(root, {'StdArchive': {'archive_interval': str(interval)}},
                                  now=generated), encoding='utf-8')
    return browse(page, tmp_path, screenshot=tmp_path / 'page.png')


def test_a_fresh_primary_page(tmp_path):
    now = int(time.time())
    dom = open_page(tmp_path, primary_status(now), now)
    assert is_hidden(dom, 'stale')
    text = page_text(dom)
    assert 'Primary online' in text and 'Page generated %s' % when(now) in text
    rows = element_text(dom, 'secondaries')
    assert 'mqttreplicate-requester-cellar offline offline since %s' % when(now - 5400) in rows
    assert '1 h 34 min (19 records)' in rows
    assert (tmp_path / 'page.png').stat().st_size > 10000


def test_a_secondary_page_older_than_two_report_intervals_is_marked_stale(tmp_path):
    generated = int(time.time()) - 11 * 60                   # interval 300 s: stale after 10 min
    dom = open_page(tmp_path, secondary_status(generated), generated)
    assert not is_hidden(dom, 'stale')
    assert element_text(dom, 'stale').startswith('Stale: this page was generated 11 min ago')
    assert 'weewx/aq_binding catching up' in element_text(dom, 'bindings')


def test_a_page_within_two_intervals_is_not(tmp_path):
    generated = int(time.time()) - 9 * 60
    dom = open_page(tmp_path, secondary_status(generated), generated)
    assert is_hidden(dom, 'stale')


def test_no_status_yet_and_stale(tmp_path):
    generated = int(time.time()) - 3600
    dom = open_page(tmp_path, None, generated, interval=60)
    text = page_text(dom)
    assert 'No replication status yet' in text
    assert 'Stale: this page was generated 1 h 0 min ago, more than two report intervals ' \
           '(2 min)' in text
