"""`status --json` and `check` (docs/seeing.md): the station's status file, read for scripts
and monitors; each exit code of `check` provoked with the real roles and a private broker."""

import json
import time

import pytest

from tests.integration.harness import KEY, START, STEP, add_to_primary, new_record, \
    wait_until
from user.mqttreplicate import cli, statusfile

pytestmark = pytest.mark.integration


def run(capsys, station, *args):
    """(exit code, stdout) of the command line for a station, in this process."""
    capsys.readouterr()
    code = cli.main(['--config', str(station.config_path)] + list(args))
    return code, capsys.readouterr().out


def wait_check(capsys, station, code, *args, timeout=20):
    """Wait until `check` exits with code; its line."""
    deadline = time.monotonic() + timeout
    while True:
        got, out = run(capsys, station, 'check', *args)
        if got == code:
            return out.strip()
        assert time.monotonic() < deadline, 'check exits %d, not %d: %s\n%s' % (
            got, code, out, open(statusfile.status_path(station.config_dict())).read())
        time.sleep(0.5)


def test_ok_and_status_json_on_both_roles(rig, broker, capsys):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker, clientid='checked')
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    line = wait_check(capsys, secondary, 0)
    assert line.startswith('REPLICATION OK - weewx/wx_binding live | lag=0s;600;1800')
    line = wait_check(capsys, primary, 0)
    assert line.startswith('REPLICATION OK - checked weewx/wx_binding live | lag=0s;')

    code, out = run(capsys, secondary, 'status', '--json')
    assert code == 0
    data = json.loads(out)
    assert data['format'] == 1 and data['requester']['bindings'][KEY]['newest'] \
        == START + 99 * STEP and data['responder'] is None and data['age'] >= 0
    code, out = run(capsys, primary, 'status', '--json')
    assert code == 0
    assert json.loads(out)['responder']['secondaries']['checked']['bindings'][KEY]['lag'] == 0


def test_warning_then_critical_as_a_secondary_falls_behind(rig, broker, capsys):
    primary = rig.primary(broker, count=100)
    secondary = rig.secondary(broker, clientid='web')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    wait_check(capsys, primary, 0)
    node.stop()                        # the secondary is away; the primary goes on
    newest = START + 99 * STEP
    add_to_primary(primary, [new_record(newest + n * STEP) for n in range(1, 4)])
    responder._queue(('refresh',))     # (what the responder does every minute)
    line = wait_check(capsys, primary, 1)
    assert 'web weewx/wx_binding 3 intervals behind' in line, line
    assert line.endswith('| lag=900s;600;1800'), line
    assert 'secondary web offline' in line        # (every finding of the worst state)
    add_to_primary(primary, [new_record(newest + n * STEP) for n in range(4, 8)])
    responder._queue(('refresh',))
    line = wait_check(capsys, primary, 2)
    assert line.startswith('REPLICATION CRITICAL - web weewx/wx_binding 7 intervals '
                           'behind | lag=2100s;600;1800'), line
    # thresholds are the caller's
    assert run(capsys, primary, 'check', '--warn', '8', '--crit', '10')[0] == 1  # offline
    assert run(capsys, primary, 'check', '--warn', '0')[0] == 3


def test_critical_when_refused(rig, broker, capsys):
    primary = rig.primary(broker, count=10)
    # a binding the primary does not serve
    secondary = rig.secondary(broker, other_bindings={
        'nope': {'secondary_data_binding': 'wx_binding'}})
    rig.start_responder(primary)
    rig.start_requester(secondary)
    line = wait_check(capsys, secondary, 2)
    assert line.startswith('REPLICATION CRITICAL - weewx/nope refused by the '
                           'responder'), line


def test_unknown_without_a_broker_or_a_file(rig, broker, capsys, tmp_path):
    secondary = rig.secondary(broker, clientid='lonely')
    code, out = run(capsys, secondary, 'check')
    assert code == 3 and out.startswith('REPLICATION UNKNOWN - no status file at ')
    code, _ = run(capsys, secondary, 'status', '--json')
    assert code == 3
    broker.stop()
    rig.start_requester(secondary, wait=False)
    path = statusfile.status_path(secondary.config_dict())
    wait_until(lambda: statusfile.read(path), 10, 'the status file')
    code, line = run(capsys, secondary, 'check')
    assert code == 3 and line.startswith('REPLICATION UNKNOWN - requester not connected to '
                                         'the broker'), line
    # and why, once the first connection failed
    wait_until(lambda: 'not connected to the broker: cannot reach broker'
               in run(capsys, secondary, 'check')[1], 15, 'the reason in the line')
    # a file nobody writes any more
    data = json.load(open(path))
    data['written'] -= 3600
    stale = tmp_path / 'stale.json'
    stale.write_text(json.dumps(data))
    code, out = run(capsys, secondary, '--status-file', str(stale), 'check')
    assert code == 3 and 'not written for 36' in out
