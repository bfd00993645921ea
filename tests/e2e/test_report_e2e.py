"""The Replication report under real weewxd, on a primary and a secondary, and in Chromium.

Both stations run WeeWX's StdReport with the Replication report as the installer declares
it (the skin linked from this repository, HTML_ROOT public_html/replication) and no other
report. The secondary's archive interval is 60 s, so its engine writes its reports every
minute; the primary's simulator runs through simulated time, so its engine writes them
after almost every record. Once the secondary caught up, the primary is held and both
stations' status files (written by the responder and the requester) say so, the pages must
show the numbers of the run: the newest record both sides have, the secondary's client id,
the states, no lag. The secondary's page is written by its weewxd; the primary's
engine is held (it writes no report meanwhile), so its page is made again by WeeWX's report
engine run here, as `weectl report run` runs it but without loading the station's services
(which would start a second responder with the primary's client id).

Headless Chromium then opens both pages and reads what they show after their script ran;
with REPLICATION_SCREENSHOTS=<directory> it saves replication-primary.png and
replication-secondary.png there (docs/ holds the ones made that way).
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.replication import MAIN_KEY, wait_until
from tests.support.pages import CHROMIUM, browse, element_text, is_hidden, page_text
from tests.support.status_fixture import FILE_NAME as STATUS_FILE
from tests.test_install import load_install_module
from user.mqttreplicate import config as cfg

pytestmark = pytest.mark.e2e

SKIN_SRC = Path(__file__).resolve().parents[2] / 'skins' / 'Replication'
GENERATED = re.compile(r'Generated 1 files for report Replication in ([\d.]+) seconds')
TEMPLATE_FAILED = re.compile(r'(Evaluation|Compilation) of template .* failed|Ignoring template')


def enable_report(station):
    """The Replication report as 'weectl extension install' adds it, the only report that
    runs; returns the path of its page."""
    (station.root / 'skins' / 'Replication').symlink_to(SKIN_SRC, target_is_directory=True)
    report = load_install_module().make_config()['StdReport']['Replication'].dict()

    def fn(config):
        config['Engine']['Services']['report_services'] = ['weewx.engine.StdReport']
        reports = config['StdReport']
        for name in reports.sections:
            reports[name]['enable'] = 'false'
        reports['Replication'] = dict(report, HTML_ROOT=os.path.join(reports['HTML_ROOT'],
                                                                     report['HTML_ROOT']))
        reports['Replication']['log_success'] = 'true'
    station.edit(fn)
    return station.root / 'public_html' / 'replication' / 'index.html'


def when(ts):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(ts))


def generated_at(page):
    """The generation time a page carries (0 if it is not there yet)."""
    try:
        text = page.read_text(encoding='utf-8')
    except FileNotFoundError:
        return 0
    match = re.search(r'data-ts="(\d+)"', text)
    return int(match.group(1)) if match else 0


def read_status(station):
    """The station's status file, as its roles wrote it (None while there is none)."""
    try:
        return json.loads((station.root / 'archive' / STATUS_FILE).read_text(encoding='utf-8'))
    except (FileNotFoundError, ValueError):
        return None


def wait_run_status(rep, held):
    """Wait until both stations' status files show the secondary holding the primary's
    newest record, held; return (the requester's client id, when the later file was
    written)."""
    requester_id = cfg.parse_requester(rep.secondary.config_dict()).connection.clientid
    seen = {}

    def both_know():
        primary, secondary = read_status(rep.primary), read_status(rep.secondary)
        seen.update(primary=primary, secondary=secondary)
        try:
            acked = primary['responder']['secondaries'][requester_id]
            mine = secondary['requester']['bindings'][MAIN_KEY]
            return (acked['state'] == 'live' and acked['bindings'][MAIN_KEY]['newest'] == held
                    and primary['responder']['bindings'][MAIN_KEY]['newest'] == held
                    and mine['state'] == 'live' and mine['newest'] == held
                    and mine['primary_newest'] == held)
        except (KeyError, TypeError):
            return False
    wait_until(both_know, 60, 'both status files showing the secondary at %s' % held,
               describe=lambda: json.dumps(seen, indent=1))
    return requester_id, max(seen['primary']['written'], seen['secondary']['written'])



def wait_offline(primary, requester_id):
    """Wait until the primary's status file has the secondary offline; return since when."""
    def offline_since():
        status = read_status(primary) or {}
        try:
            secondary = status['responder']['secondaries'][requester_id]
        except (KeyError, TypeError):
            return None
        return secondary['state'] == 'offline' and secondary['offline_since']
    return wait_until(offline_since, 60, 'the primary to see %s offline' % requester_id,
                      describe=lambda: json.dumps(read_status(primary), indent=1))


def run_report_engine(station, report):
    """WeeWX's report engine for one report of the station, as `weectl report run` runs it
    (the newest record, this thread), without the station's services."""
    import weewx.manager
    import weewx.reportengine
    import weewx.station

    config_dict = station.config_dict()
    with weewx.manager.open_manager_with_config(config_dict, 'wx_binding') as manager:
        ts = manager.lastGoodStamp()
        record = manager.getRecord(ts)
    stn_info = weewx.station.StationInfo(**config_dict['Station'])
    weewx.reportengine.StdReportEngine(config_dict, stn_info, record=record,
                                       gen_ts=ts).run([report])


def test_both_roles_pages_under_weewxd_and_in_chromium(replication, tmp_path):
    rep = replication(requester_options={'archive_interval': '60'})
    primary_page = enable_report(rep.primary)
    secondary_page = enable_report(rep.secondary)
    rep.seed(days=2)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=5)

    # The primary's engine writes the page with its other reports, after its records.
    pri.wait_for_log(GENERATED.pattern, timeout=60)
    text = page_text(primary_page.read_text(encoding='utf-8'))
    assert text.startswith('Replication') and 'Page generated' in text
    assert 'Primary online' in text or 'No replication status yet' in text, text

    # Hold the primary; the secondary has everything.
    held = rep.hold(pri)
    rep.wait_in_sync()
    assert rep.secondary.last_timestamp() == held
    requester_id, written = wait_run_status(rep, held)

    # The secondary's engine writes its page within an archive interval (60 s).
    wait_until(lambda: generated_at(secondary_page) > written, 90,
               "the secondary's page generated after the status")
    # The primary's engine is held: WeeWX's report engine, run here.
    run_report_engine(rep.primary, 'Replication')
    assert generated_at(primary_page) > written

    # No Cheetah error in any log, and a page is quick to make (it reads one small file);
    # the pages show the run's numbers.
    for station in (rep.primary, rep.secondary):
        logs = ''.join(p.read_text(errors='replace') for p in (station.root / 'log').glob('*.log'))
        assert not TEMPLATE_FAILED.search(logs), logs[-3000:]
        took = [float(t) for t in GENERATED.findall(station.log_text())]
        assert took and max(took) < 1.0, took
    html = primary_page.read_text(encoding='utf-8')
    rows = element_text(html, 'secondaries')
    assert '%s live' % requester_id in rows
    assert '%s %s 0 s (0 records)' % (MAIN_KEY, when(held)) in rows
    assert '%s %s' % (MAIN_KEY, when(held)) in element_text(html, 'primary-bindings')
    html = secondary_page.read_text(encoding='utf-8')
    assert 'Requester %s' % requester_id in page_text(html)
    assert '%s live %s %s 0 s (0 records)' % (MAIN_KEY, when(held), when(held)) in \
        element_text(html, 'bindings')
    for html in (primary_page.read_text(), secondary_page.read_text()):
        assert 'Cheetah' not in html and 'NotFound' not in html
        assert is_hidden(html, 'stale')

    # The secondary stops: the primary's page says since when it is offline.
    sec.stop()
    offline_since = wait_offline(rep.primary, requester_id)
    run_report_engine(rep.primary, 'Replication')
    rows = element_text(primary_page.read_text(encoding='utf-8'), 'secondaries')
    assert '%s offline offline since %s' % (requester_id, when(offline_since)) in rows
    offline_page = tmp_path / 'primary-offline.html'
    shutil.copy(primary_page, offline_page)
    sec = rep.start_secondary()

    rep.release()
    rep.wait_primary_grows(2)
    rep.finish(pri, [sec])

    # --- in Chromium ---------------------------------------------------------------------------
    if not CHROMIUM:
        pytest.skip('chromium is not installed (scripts/setup installs it)')
    shots = Path(os.environ.get('REPLICATION_SCREENSHOTS') or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    for role, page, table in (('primary', primary_page, 'secondaries'),
                              ('secondary', secondary_page, 'bindings')):
        dom = browse(page, tmp_path, screenshot=shots / ('replication-%s.png' % role))
        text = page_text(dom)
        assert 'Replication' in text and when(held) in element_text(dom, table)
        assert requester_id in text
        # Fresh: the script left the stale mark hidden.
        assert is_hidden(dom, 'stale'), element_text(dom, 'stale')
        assert (shots / ('replication-%s.png' % role)).stat().st_size > 10000
    dom = browse(offline_page, tmp_path)
    assert '%s offline offline since %s' % (requester_id, when(offline_since)) in \
        element_text(dom, 'secondaries')
    # The same page, two report intervals and more later: the script shows the mark.
    old = tmp_path / 'old.html'
    text = secondary_page.read_text(encoding='utf-8')
    old.write_text(re.sub(r'data-ts="\d+"', 'data-ts="%d"' % (time.time() - 3 * 3600), text),
                   encoding='utf-8')
    dom = browse(old, tmp_path)
    assert not is_hidden(dom, 'stale')
    assert 'Stale: this page was generated 3 h 0 min ago' in element_text(dom, 'stale')
    shutil.rmtree(tmp_path / 'chromium-profile', ignore_errors=True)
