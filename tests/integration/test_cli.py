"""The command line (SPEC 6.6): its commands, output and exit codes, run as a user would."""

import re

import pytest

from tests.integration.harness import assert_same, wait_until

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r'^replicated (\d+) records in [\d.]+ s \((\d+) records/s\)$', re.M)


def test_version_help_and_usage(rig, broker):
    station = rig.secondary(broker)
    version = station.run_cli('--version', timeout=60)
    assert version.returncode == 0
    assert re.match(r'MQTTReplicate \d+\.\d+\.\d+', version.stdout.strip())
    helped = station.run_cli('--help', timeout=60)
    assert helped.returncode == 0
    for command in ('respond', 'request', 'status', 'verify'):
        assert command in helped.stdout
    nothing = station.run_cli(timeout=60)
    assert nothing.returncode == 2
    unknown = station.run_cli('frobnicate', timeout=60)
    assert unknown.returncode == 2


@pytest.mark.parametrize('stanza', ['Replicator', 'MQTTReplicate'])
def test_configuration_errors_exit_2_naming_option_and_section(rig, broker, stanza):
    station = rig.secondary(broker, stanza=stanza)
    station.edit(lambda c: c[stanza]['Requester'].__setitem__('page_size', 'many'))
    result = station.run_cli('request', '--once', timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error:') and "'page_size'" in last \
        and '[%s][Requester]' % stanza in last, result.stderr
    missing = station.run_cli('--config', '/nonexistent/weewx.conf', 'status', timeout=60)
    assert missing.returncode == 2
    assert 'does not exist' in missing.stderr


def test_unreachable_broker_exits_3(rig, make_broker):
    broker = make_broker()
    station = rig.secondary(broker)
    broker.stop()
    result = station.run_cli('--connect-timeout', '2', 'request', '--once', timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: cannot reach the broker')


@pytest.mark.parametrize('stanza', ['Replicator', 'MQTTReplicate'])
def test_respond_request_once_and_status(rig, broker, stanza):
    """With the card's [Replicator] stanza, and with the earlier extension's [MQTTReplicate]
    (an upgraded station's, read unchanged)."""
    primary = rig.primary(broker, count=1500, stanza=stanza)
    secondary = rig.secondary(broker, page_size=400, stanza=stanza)
    responder = primary.start_cli('respond')
    responder.wait_for_output(r'responding for weewx/wx_binding', timeout=30)

    result = secondary.run_cli('request', '--once', timeout=120)
    assert result.returncode == 0, result.stderr
    summary = SUMMARY.search(result.stdout)
    assert summary and int(summary.group(1)) == 1500, result.stdout
    assert re.search(r'^records \d+, \d+ records/s', result.stdout, re.M) or \
        int(summary.group(1)) == 1500
    assert_same(primary, secondary)

    # A second run has nothing to do, and says so with the same summary line.
    again = secondary.run_cli('request', '--once', timeout=120)
    assert again.returncode == 0, again.stderr
    assert SUMMARY.search(again.stdout).group(1) == '0'

    # status shows the responder's retained status with the secondary as an acknowledged node
    clientid = secondary.load()[stanza]['Requester']['clientid'] \
        if 'clientid' in secondary.load()[stanza]['Requester'] \
        else secondary.load()[stanza]['clientid']

    def status_lists_node():
        shown = secondary.run_cli('status', timeout=60)
        assert shown.returncode == 0, shown.stderr
        return clientid in shown.stdout and 'replicate/status/weewx' in shown.stdout and shown

    shown = wait_until(status_lists_node, 20, 'status to list the secondary')
    assert 'online' in shown.stdout
    responder.stop()
