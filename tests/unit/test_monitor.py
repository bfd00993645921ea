"""The `check` command's judgement of a status file (monitor.judge)."""

from user.mqttreplicate import monitor

NOW = 1767225600


def requester(**binding):
    entry = {'state': 'live', 'lag': 0, 'verify_result': 'in sync'}
    entry.update(binding)
    return {'format': 1, 'written': NOW - 10,
            'station': {'archive_interval': 300, 'timezone': 'UTC', 'location': None},
            'responder': None,
            'requester': {'state': 'online', 'primary': {'state': 'online'},
                          'bindings': {'weewx/wx_binding': entry}}}


def test_lag_thresholds_in_intervals():
    assert monitor.judge(requester(lag=299), now=NOW) == (
        0, 'REPLICATION OK - weewx/wx_binding live | lag=299s;600;1800')
    assert monitor.judge(requester(lag=900), now=NOW) == (
        1, 'REPLICATION WARNING - weewx/wx_binding 3 intervals behind | lag=900s;600;1800')
    assert monitor.judge(requester(lag=1800), now=NOW)[0] == 2
    assert monitor.judge(requester(lag=1800), warn=7, crit=8, now=NOW) == (
        0, 'REPLICATION OK - weewx/wx_binding 6 intervals behind | lag=1800s;2100;2400')


def test_states():
    assert monitor.judge(requester(state='refused', lag=None), now=NOW)[0] == 2
    assert monitor.judge(requester(verify_result='differs'), now=NOW)[0] == 1
    assert monitor.judge(requester(state='asking', lag=None), now=NOW)[0] == 3
    data = requester()
    data['requester']['state'] = 'connecting'
    assert monitor.judge(data, now=NOW)[0] == 3
    data['requester']['state'] = 'offline'
    assert monitor.judge(data, now=NOW)[0] == 2
    data = requester()
    data['requester']['primary'] = {'state': 'offline', 'offline_since': NOW - 60}
    assert monitor.judge(data, now=NOW) == (
        1, 'REPLICATION WARNING - primary offline | lag=0s;600;1800')


def test_unknown_without_a_fresh_file():
    assert monitor.judge(None, now=NOW, path='/x.json') == (
        3, 'REPLICATION UNKNOWN - no status file at /x.json: is weewxd (or the command) '
           'running?')
    assert monitor.judge(requester(), now=NOW + 3600)[0] == 3


def test_a_primary_judges_every_secondary():
    data = requester()
    data['requester'] = None
    data['responder'] = {'state': 'online', 'secondaries': {
        'a': {'state': 'live', 'bindings': {'weewx/wx_binding': {'lag': 0}}},
        'b': {'state': 'live', 'bindings': {'weewx/wx_binding': {'lag': 2400}}}}}
    assert monitor.judge(data, now=NOW) == (
        2, 'REPLICATION CRITICAL - b weewx/wx_binding 8 intervals behind | '
           'lag_a_weewx_wx_binding=0s;600;1800 lag_b_weewx_wx_binding=2400s;600;1800')
    data['responder']['secondaries'] = {}
    assert monitor.judge(data, now=NOW) == (3, 'REPLICATION UNKNOWN - no secondary seen')
