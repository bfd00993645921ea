"""The station's status file (statusfile.py) and the status pacing (status.Pacer)."""

import json
import os
import threading

from user.mqttreplicate import statusfile
from user.mqttreplicate.status import Pacer


def test_path_beside_the_sqlite_databases(tmp_path):
    config = {'WEEWX_ROOT': str(tmp_path)}
    assert statusfile.status_path(config) == str(tmp_path / 'archive' / statusfile.FILENAME)
    config['DatabaseTypes'] = {'SQLite': {'SQLITE_ROOT': 'data'}}
    assert statusfile.status_path(config) == str(tmp_path / 'data' / statusfile.FILENAME)
    config['DatabaseTypes'] = {'SQLite': {'SQLITE_ROOT': '/var/lib/weewx'}}
    assert statusfile.status_path(config) == '/var/lib/weewx/' + statusfile.FILENAME


def test_station_info():
    config = {'Station': {'location': ['Hood River', ' Oregon']},
              'StdArchive': {'archive_interval': '60'}}
    info = statusfile.station_info(config)
    assert info['location'] == 'Hood River,  Oregon'
    assert info['archive_interval'] == 60
    assert statusfile.station_info({}, 300)['archive_interval'] == 300


def test_two_roles_share_one_file(tmp_path):
    """A relay: each role writes its own key; neither removes the other's."""
    path = str(tmp_path / 'archive' / statusfile.FILENAME)
    station = {'location': 'here', 'timezone': 'UTC', 'archive_interval': 300}
    responder = statusfile.StatusFile(path, station, 'responder')
    requester = statusfile.StatusFile(path, station, 'requester')

    def write(role_file, n):
        for i in range(n):
            role_file.write({'state': 'online', 'n': i})

    threads = [threading.Thread(target=write, args=(f, 50)) for f in (responder, requester)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = statusfile.read(path)
    assert data['format'] == 1 and data['station'] == station
    assert data['responder'] == {'state': 'online', 'n': 49}
    assert data['requester'] == {'state': 'online', 'n': 49}
    assert [name for name in os.listdir(tmp_path / 'archive') if name.endswith('.tmp')] == []


def test_writes_are_paced(tmp_path, monkeypatch):
    path = str(tmp_path / statusfile.FILENAME)
    status_file = statusfile.StatusFile(path, {}, 'requester')
    clock = [1000.0]
    monkeypatch.setattr(statusfile.time, 'monotonic', lambda: clock[0])
    assert status_file.offer({'a': 1}, 'k')             # the first
    clock[0] += 1
    assert not status_file.offer({'a': 2}, 'k')         # routine, too soon
    assert status_file.offer({'a': 2}, 'k2')            # what a reader needs: at once
    clock[0] += 5
    assert status_file.offer({'a': 3}, 'k2')            # routine, 5 s later
    clock[0] += 30
    assert not status_file.offer({'a': 3}, 'k2')        # nothing new
    clock[0] += 30
    assert status_file.offer({'a': 3}, 'k2')            # the heartbeat
    assert json.load(open(path))['requester'] == {'a': 3}


def test_an_unwritable_file_is_logged_once(tmp_path, caplog):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    status_file = statusfile.StatusFile(str(blocker / 'x' / statusfile.FILENAME), {}, 'responder')
    assert not status_file.write({})
    assert not status_file.write({})
    assert len([r for r in caplog.records if 'cannot write' in r.getMessage()]) == 1


def test_pacer_folds_routine_changes():
    pacer = Pacer(period=60, settle=2)
    assert pacer.due({'n': 0}, 'online', now=0)            # first: at once
    pacer.published({'n': 0}, 'online')
    assert not pacer.due({'n': 0}, 'online', now=1)        # nothing new
    assert not pacer.due({'n': 1}, 'online', now=10)       # a record...
    assert not pacer.due({'n': 2}, 'online', now=11)       # ...its acknowledgement
    assert pacer.due({'n': 2}, 'online', now=13)           # quiet for 2 s: one status
    pacer.published({'n': 2}, 'online')
    assert pacer.due({'n': 2}, 'catching up', now=13.5)    # a reader needs it: at once
    pacer.published({'n': 2}, 'catching up')
    for t in range(20, 90):                                # changes every second
        if pacer.due({'n': t}, 'catching up', now=t):
            break
    assert t == 80                     # a period after the first change, not before


def test_pacer_heartbeat_holds_back_steady_pictures():
    """A steady picture replacing a steady one waits for the heartbeat; a key change, a
    picture that is not steady, and the first steady one after it go out as before."""
    pacer = Pacer(period=300, settle=2, heartbeat=3000, grace=30)
    assert pacer.due({'n': 0}, 'live', True, now=0)
    pacer.published({'n': 0}, 'live', True, now=0)
    published = []
    for n in range(1, 12):                             # a record every 300 s
        t = n * 300
        for now in (t, t + 1, t + 5):                  # the record, its ack, settled
            if pacer.due({'n': n}, 'live', True, now=now):
                pacer.published({'n': n}, 'live', True, now=now)
                published.append(n)
    assert published == [10]                           # the heartbeat, 3000 s after
    # behind: not steady, published once it stayed so for the grace (30 s)
    assert not pacer.due({'n': 12, 'lag': 300}, 'live', False, now=3600)
    assert not pacer.due({'n': 12, 'lag': 300}, 'live', False, now=3629)
    assert pacer.due({'n': 12, 'lag': 300}, 'live', False, now=3630)
    pacer.published({'n': 12, 'lag': 300}, 'live', False, now=3630)
    assert not pacer.due({'n': 12}, 'live', True, now=3631)
    assert pacer.due({'n': 12}, 'live', True, now=3633)    # steady again: once settled
    pacer.published({'n': 12}, 'live', True, now=3633)
    assert pacer.due({'n': 12}, 'error', True, now=3634)   # a reader needs it: at once


def test_pacer_grace_keeps_acknowledgements_on_their_way_quiet():
    """Steady, then a record whose acknowledgements come late (not steady for a few
    seconds, longer than settle): nothing goes out until the heartbeat. Without the grace,
    that record costs two statuses (the lag, then steady again)."""
    pacer = Pacer(period=60, settle=2, heartbeat=600, grace=30)
    pacer.published({'n': 0}, 'live', True, now=0)
    published = []
    for n in range(1, 10):                             # a record every 60 s
        t = n * 60
        for now, steady in ((t, False), (t + 1, False), (t + 4, False), (t + 5, True),
                            (t + 8, True)):
            content = {'n': n, 'acked': steady}
            if pacer.due(content, 'live', steady, now=now):
                pacer.published(content, 'live', steady, now=now)
                published.append(now)
    assert published == []
    assert pacer.due({'n': 10, 'acked': True}, 'live', True, now=603)   # the heartbeat


def test_status_heartbeat_option():
    from user.mqttreplicate import config as cfg
    stanza = {'Requester': {'weewx': {'wx_binding': {'type': 'main'}}}}
    assert cfg.parse_requester({'Replicator': stanza}).status_heartbeat == 10
    stanza['status_heartbeat'] = '1'
    assert cfg.parse_requester({'Replicator': stanza}).status_heartbeat == 1
    assert cfg.misnamed({'Replicator': stanza}) == []


def test_homeassistant_options():
    from user.mqttreplicate import config as cfg
    stanza = {'Requester': {'weewx': {'wx_binding': {'type': 'main'}}}}
    assert cfg.parse_homeassistant({'Replicator': stanza}) == cfg.HomeAssistantOptions()
    stanza['HomeAssistant'] = {'enable': 'true', 'discovery_prefix': 'ha'}
    options = cfg.parse_homeassistant({'Replicator': stanza})
    assert options.enable and options.discovery_prefix == 'ha'
    assert cfg.misnamed({'Replicator': stanza}) == []
    stanza['HomeAssistant'] = {'enabel': 'true'}
    assert cfg.misnamed({'Replicator': stanza}) == [
        "option 'enabel' in section [Replicator][HomeAssistant] is unknown and ignored "
        "(did you mean 'enable'?)"]
    stanza['HomeAssistant'] = {'discovery_prefix': 'ha/#'}
    try:
        cfg.parse_homeassistant({'Replicator': stanza})
        raise AssertionError('no ConfigError')
    except cfg.ConfigError as e:
        assert 'discovery_prefix' in str(e)


def test_responder_steady_only_when_every_online_secondary_acknowledged():
    """A secondary that is behind, or stopped acknowledging while online, keeps the
    responder's picture from being steady (its lag is news, not held for the heartbeat);
    one whose own status says offline does not."""
    import types
    from user.mqttreplicate.responder import Responder
    from user.mqttreplicate.statusfile import Secondaries
    holder = types.SimpleNamespace(secondaries=Secondaries())
    key = 'weewx/wx_binding'

    def steady(**lags):
        status = {'nodes': {node: {key: {'lag': lag}} for node, lag in lags.items()}}
        return Responder.steady(holder, status)

    assert steady(a=0, b=0)
    assert not steady(a=0, b=300)                      # b is behind, and online or unknown
    holder.secondaries.update('b', {'state': 'online', 'bindings': {}})
    assert not steady(a=0, b=3000)
    holder.secondaries.update('b', {'state': 'offline'})
    assert steady(a=0, b=3000)                         # gone: its growing lag is not news
    assert not steady(a=None)                          # no lag known
