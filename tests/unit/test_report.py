"""The Replication report without weewxd: the status file's reader (statusread) and the
page its search list extension (report.ReplicationStatus) and template make, for each state
of either role, for a missing, unreadable or old status file, and in the station's zone."""

import json
import time

import pytest

from tests.support.pages import element_text, is_hidden, page_text, render_report
from tests.support.status_fixture import primary_status, secondary_status, write_status
from user.mqttreplicate import report, statusread

NOW = 1796601600 + 3 * 3600 + 25 * 60 + 7          # 2026-12-07 03:25:07 UTC


def when(ts, fmt='%Y-%m-%d %H:%M:%S UTC'):
    return time.strftime(fmt, time.gmtime(ts))


@pytest.fixture
def root(tmp_path):
    """A station's WEEWX_ROOT (only its archive directory is used)."""
    return tmp_path / 'station'


def page(root, status=None, config=None, now=NOW):
    if status is not None:
        write_status(root / 'archive', status)
    return render_report(root, config, now=now)


# --- statusread ------------------------------------------------------------------------------

def test_status_path_is_beside_the_sqlite_databases():
    assert statusread.status_path({'WEEWX_ROOT': '/home/weewx'}) == \
        '/home/weewx/archive/mqttreplicate-status.json'
    config = {'WEEWX_ROOT': '/home/weewx', 'DatabaseTypes': {'SQLite': {'SQLITE_ROOT': 'db'}}}
    assert statusread.status_path(config) == '/home/weewx/db/mqttreplicate-status.json'
    config['DatabaseTypes']['SQLite']['SQLITE_ROOT'] = '/var/lib/weewx'
    assert statusread.status_path(config) == '/var/lib/weewx/mqttreplicate-status.json'


def test_reads_both_roles_into_frozen_objects(tmp_path):
    doc = primary_status(NOW)
    doc['requester'] = secondary_status(NOW)['requester']
    status = statusread.read_status(write_status(tmp_path, doc))
    assert status.format == 1 and status.written == NOW - 5
    assert status.station == statusread.Station('Test primary', 'UTC', 300)
    responder = status.responder
    assert (responder.state, responder.since, responder.clientid) == \
        ('online', NOW - 7200, 'mqttreplicate-responder-primary')
    assert responder.bindings == (statusread.Newest('weewx/wx_binding', NOW - 60),)
    attic, cellar = responder.secondaries
    assert (attic.clientid, attic.state, attic.offline_since) == \
        ('mqttreplicate-requester-attic', 'live', None)
    assert (cellar.state, cellar.offline_since) == ('offline', NOW - 5400)
    assert cellar.bindings[0] == statusread.SecondaryBinding(
        'weewx/wx_binding', NOW - 5700, 5640, 19, NOW - 5400, None, None)
    requester = status.requester
    assert requester.primary == statusread.Peer('online', None)
    aq, wx = requester.bindings                            # sorted by key
    assert (aq.key, aq.state, aq.repaired_days, aq.repaired_records, aq.rejected,
            aq.summaries) == ('weewx/aq_binding', 'catching up', 2, 310, 3, 'rebuilt')
    assert (wx.key, wx.state, wx.lag, wx.verify_result) == \
        ('weewx/wx_binding', 'live', 0, 'in sync')
    with pytest.raises(AttributeError):
        wx.state = 'refused'


def test_a_missing_file_is_none_and_a_broken_one_an_error(tmp_path):
    assert statusread.read_status(tmp_path / 'nothing.json') is None
    for text, words in (('{"format": 1, "writ', 'is not JSON'), ('[1, 2]', 'no JSON object'),
                        ('\xff\xfe', 'is not JSON')):
        path = tmp_path / 'status.json'
        path.write_bytes(text.encode('latin-1'))
        with pytest.raises(statusread.StatusError, match=words):
            statusread.read_status(path)
    path.write_bytes(b' ' * (statusread.MAX_BYTES + 1))
    with pytest.raises(statusread.StatusError, match='larger than'):
        statusread.read_status(path)


def test_wrong_or_missing_values_read_as_nothing(tmp_path):
    doc = {'station': 'Berlin', 'written': 'yesterday',
           'responder': {'state': 3, 'since': -5, 'bindings': {'weewx/wx_binding': 7},
                         'secondaries': {'a': {'bindings': {'weewx/wx_binding': {
                             'lag': 'long', 'newest': True,
                             'lag_records': 2.0}}}, 'b': 'offline'}},
           'requester': {'primary': None, 'last_error': {'message': 5},
                         'bindings': {'weewx/wx_binding': {'repaired_days': -1,
                                                           'rejected': '3'}}}}
    status = statusread.read_status(write_status(tmp_path, json.dumps(doc)))
    assert status.format is None and status.written is None
    assert status.station == statusread.Station(None, None, None)
    assert status.responder.state is None and status.responder.since is None
    assert status.responder.bindings == ()
    (sec,) = status.responder.secondaries
    assert sec.clientid == 'a' and sec.state is None
    assert sec.bindings[0].lag is None and sec.bindings[0].newest is None
    assert sec.bindings[0].lag_records == 2
    req = status.requester
    assert req.primary == statusread.Peer(None, None) and req.last_error is None
    assert (req.bindings[0].repaired_days, req.bindings[0].rejected) == (0, 0)


# --- the page: a primary ---------------------------------------------------------------------

def test_primary_page_shows_every_secondary(root):
    html = page(root, primary_status(NOW))
    text = page_text(html)
    assert 'Test primary: this station is a primary' in text
    assert 'Primary online' in text
    assert 'Responder mqttreplicate-responder-primary, version 0.1.0, online since %s' \
        % when(NOW - 7200) in text
    rows = element_text(html, 'secondaries')
    # The live one: its newest record acknowledged, lag, last acknowledgement, verification.
    assert 'mqttreplicate-requester-attic live last contact %s weewx/wx_binding %s 0 s ' \
           '(0 records) %s %s in sync' % (when(NOW - 30), when(NOW - 60), when(NOW - 55),
                                           when(NOW - 3600)) in rows
    # The offline one: since when, its lag in time and records, never verified.
    assert 'mqttreplicate-requester-cellar offline offline since %s last contact %s ' \
           'weewx/wx_binding %s 1 h 34 min (19 records) %s \u2014' \
           % (when(NOW - 5400), when(NOW - 5400), when(NOW - 5700), when(NOW - 5400)) in rows
    assert '<span class="state bad">offline</span>' in html
    assert '<span class="state good">live</span>' in html
    assert 'weewx/wx_binding %s' % when(NOW - 60) in element_text(html, 'primary-bindings')
    assert element_text(html, 'secondary') is None
    assert 'Cheetah' not in html and 'NotFound' not in html


@pytest.mark.parametrize('state, css', [('catching up', 'busy'), ('live', 'good'),
                                        ('offline', 'bad'), ('unknown', 'bad')])
def test_primary_page_shows_each_state_of_a_secondary(root, state, css):
    doc = primary_status(NOW)
    sec = doc['responder']['secondaries']['mqttreplicate-requester-attic']
    sec['state'] = state
    html = page(root, doc)
    assert '<span class="state %s">%s</span>' % (css, state) in html


def test_primary_without_secondaries_or_online(root):
    doc = primary_status(NOW)
    doc['responder']['secondaries'] = {}
    doc['responder']['state'] = 'connecting'
    doc['responder']['last_error'] = {'time': NOW - 20, 'message': 'broker not reachable'}
    text = page_text(page(root, doc))
    assert 'Primary connecting' in text
    assert 'No secondary has been seen yet.' in text
    assert 'Last error, %s: broker not reachable' % when(NOW - 20) in text


# --- the page: a secondary -------------------------------------------------------------------

def test_secondary_page_shows_every_binding(root):
    html = page(root, secondary_status(NOW))
    text = page_text(html)
    assert 'Test secondary: this station is a secondary' in text
    assert 'Requester mqttreplicate-requester-attic, version 0.1.0, online since %s. ' \
           'The primary: online' % when(NOW - 3600) in text
    rows = element_text(html, 'bindings')
    assert 'weewx/aq_binding catching up %s %s 23 h 59 min (288 records) %s %s repaired ' \
           '2 days, 310 records 3 rebuilt' % (when(NOW - 86400), when(NOW - 60),
                                              when(NOW - 2), when(NOW - 90000)) in rows
    assert 'weewx/wx_binding live %s %s 0 s (0 records) %s %s in sync none 0 copied' \
        % (when(NOW - 60), when(NOW - 60), when(NOW - 60), when(NOW - 1800)) in rows
    assert '<td class="num bad">3</td>' in html
    assert element_text(html, 'primary') is None


@pytest.mark.parametrize('state, css', [('starting', 'busy'), ('asking', 'busy'),
                                        ('catching up', 'busy'), ('live', 'good'),
                                        ('unanswered', 'bad'), ('refused', 'bad')])
def test_secondary_page_shows_each_state_of_a_binding(root, state, css):
    doc = secondary_status(NOW)
    doc['requester']['bindings']['weewx/wx_binding']['state'] = state
    html = page(root, doc)
    assert '<span class="state %s">%s</span>' % (css, state) in html


@pytest.mark.parametrize('result, css', [('in sync', 'good'), ('repaired', 'busy'),
                                         ('differs', 'bad'), ('failed', 'bad')])
def test_secondary_page_shows_each_verification_result(root, result, css):
    doc = secondary_status(NOW)
    doc['requester']['bindings']['weewx/wx_binding']['verify_result'] = result
    assert '<span class="result %s">%s</span>' % (css, result) in page(root, doc)


def test_secondary_page_says_since_when_the_primary_is_offline(root):
    doc = secondary_status(NOW)
    doc['requester']['primary'] = {'state': 'offline', 'offline_since': NOW - 600}
    text = page_text(page(root, doc))
    assert 'The primary: offline offline since %s' % when(NOW - 600) in text


def test_the_roles_without_a_location(root):
    assert 'Replication This station is a secondary Page generated' in \
        page_text(page(root, secondary_status(NOW, location=None)))
    assert 'Replication Page generated' in page_text(page(root.parent / 'empty'))


def test_a_station_with_both_roles_shows_both(root):
    doc = primary_status(NOW)
    doc['requester'] = secondary_status(NOW)['requester']
    html = page(root, doc)
    assert 'this station is a primary and a secondary' in page_text(html)
    assert element_text(html, 'primary') and element_text(html, 'bindings')


# --- no status, an unreadable one, an old one ------------------------------------------------

def test_no_status_file_yet(root):
    html = page(root)
    text = page_text(html)
    assert 'No replication status yet' in text
    assert str(root / 'archive' / 'mqttreplicate-status.json') in text
    assert element_text(html, 'primary') is None and element_text(html, 'secondary') is None
    # Generated all the same, with its time and the stale mark (hidden until a script shows it).
    assert 'Page generated %s' % when(NOW) in text
    assert is_hidden(html, 'stale')


def test_an_unreadable_status_file(root):
    write_status(root / 'archive', '{"format": 1, "responder": {')
    text = page_text(page(root))
    assert 'No replication status yet' in text
    assert 'The status file cannot be read' in text and 'is not JSON' in text


def test_a_status_of_neither_role(root):
    doc = primary_status(NOW)
    doc['responder'] = None
    assert 'neither role of MQTTReplicate is running' in page_text(page(root, doc))


def test_an_old_status_is_marked(root):
    doc = secondary_status(NOW)
    doc['written'] = NOW - 2 * 3600
    html = page(root, doc)
    assert 'The status was written 2 h before this page (%s): is MQTTReplicate running?' \
        % when(NOW - 7200) in element_text(html, 'status-old')
    doc['written'] = NOW - 899                       # three intervals of 300 s: not old yet
    html = page(root, doc)
    assert element_text(html, 'status-old') is None
    assert 'Status written %s.' % when(NOW - 899) in page_text(html)
    # Short intervals: old after 3 minutes at the least (the writers write once a minute).
    doc = secondary_status(NOW, interval=30)
    doc['written'] = NOW - 170
    assert element_text(page(root, doc), 'status-old') is None
    doc['written'] = NOW - 190
    assert element_text(page(root, doc), 'status-old') is not None


def test_the_page_knows_when_it_is_stale(root):
    """The page carries its generation time and two report intervals, for its script."""
    html = page(root, secondary_status(NOW, interval=60))
    assert 'data-ts="%d" data-stale-after="120"' % NOW in html
    assert '<meta http-equiv="refresh" content="60">' in html      # loaded again each interval
    assert 'more than two report intervals (2 min)' in element_text(html, 'stale')
    # Without the status's interval, weewx.conf's [StdArchive] archive_interval, else 300 s.
    html = page(root.parent / 'other', config={'StdArchive': {'archive_interval': '900'}})
    assert 'data-stale-after="1800"' in html
    assert 'data-stale-after="600"' in page(root.parent / 'third')


@pytest.fixture
def berlin(monkeypatch):
    """The process (weewxd) in Europe/Berlin's local time."""
    monkeypatch.setenv('TZ', 'Europe/Berlin')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_the_stations_local_time_with_its_zone(root, berlin):
    html = page(root, secondary_status(NOW, timezone='Europe/Berlin'))
    text = page_text(html)
    cet = NOW + 3600                                   # CET in December
    assert "Times are the station's local time (Europe/Berlin)" in text
    assert 'Page generated %s' % when(cet, '%Y-%m-%d %H:%M:%S CET') in text
    assert '<time datetime="%s"><span>%s</span> <span>%s</span></time>' % (
        when(cet - 60, '%Y-%m-%dT%H:%M:%S+01:00'), when(cet - 60, '%Y-%m-%d'),
        when(cet - 60, '%H:%M:%S CET')) in html
    # A zone other than the process's: the times stay local, labelled by their abbreviation.
    text = page_text(page(root, secondary_status(NOW, timezone='Etc/UTC')))
    assert "local time (CET)" in text
    assert 'Page generated %s' % when(cet, '%Y-%m-%d %H:%M:%S CET') in text


def test_a_zone_python_does_not_know(root):
    text = page_text(page(root, secondary_status(NOW, timezone='Mars/Olympus')))
    assert "local time (UTC)" in text and 'Page generated %s' % when(NOW) in text
    text = page_text(page(root, secondary_status(NOW, timezone='Etc/UTC')))
    assert "local time (Etc/UTC)" in text


def test_text_from_the_file_is_escaped(root):
    doc = primary_status(NOW)
    sec = doc['responder']['secondaries'].pop('mqttreplicate-requester-attic')
    doc['responder']['secondaries']['<script>alert(1)</script>'] = sec
    doc['responder']['last_error'] = {'time': NOW, 'message': 'a & b <b>bold</b>'}
    html = page(root, doc)
    assert '<script>alert' not in html and '<b>bold' not in html
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in html
    assert 'a &amp; b &lt;b&gt;bold&lt;/b&gt;' in html


def test_the_search_list_never_fails_the_page(root, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError('boom')
    monkeypatch.setattr(report, 'build_view', broken)
    text = page_text(page(root, primary_status(NOW)))
    assert 'The replication status could not be shown: boom.' in text
    assert 'cannot show the replication status' in caplog.text


def test_durations():
    assert [report.duration(s) for s in (None, -3, 0, 59.4, 60, 3599, 3600, 3660, 86400,
                                         90000)] == \
        ['\u2014', '0 s', '0 s', '59 s', '1 min', '59 min', '1 h', '1 h 1 min', '1 d', '1 d 1 h']
    assert report.lag(300, 1) == '5 min (1 record)'
    assert report.lag(None, 3) == '\u2014'
    assert report.repairs(0, 0) == 'none'
    assert report.repairs(1, 1) == '1 day, 1 record'
