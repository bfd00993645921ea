"""Credentials and TLS: the right ones replicate; wrong ones stop the command line with exit
status 3 and one sentence, and never make the responder raise."""

import json
import time

import pytest

from tests.integration.harness import (KEY, START, assert_same, error_lines,
                                       new_record, wait_until)
from tests.support.broker import make_certs
from tests.support.measure import Fault, in_process
from tests.support.mqtt import user_properties
from tests.support.mutual import wait_mutual_knowledge

pytestmark = pytest.mark.integration

EXIT_BROKER = 3


def error_sentences(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


def assert_one_clear_sentence(result):
    assert result.returncode == EXIT_BROKER, (result.returncode, result.stdout, result.stderr)
    assert 'Traceback' not in result.stderr, result.stderr
    sentences = error_sentences(result.stderr)
    assert len(sentences) == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == sentences[0]
    return sentences[0]


def test_password_broker_right_credentials_replicate(rig, password_broker, caplog):
    primary = rig.primary(password_broker, count=500, user='primary')
    secondary = rig.secondary(password_broker, user='secondary', page_size=200)
    assert secondary.load()['Replicator']['username'] == 'secondary'
    rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(20)
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []
    # the password is never logged
    assert not any('secondary-pw' in r.getMessage() or 'primary-pw' in r.getMessage()
                   for r in caplog.records)


def test_password_broker_wrong_credentials(rig, password_broker, caplog):
    primary = rig.primary(password_broker, count=100, user='primary', password='not-it')
    secondary = rig.secondary(password_broker, user='secondary', password='wrong')

    # The responder (in-process) is refused: it never raises and keeps trying.
    responder = rig.start_responder(primary, wait=False)
    wait_until(lambda: responder.transport.refused, 10, 'the broker to refuse the responder')
    assert responder.is_alive()
    responder.publish_live(responder.bindings[KEY], new_record(START + 100 * 300),
                           START + 99 * 300)
    time.sleep(0.5)
    assert responder.is_alive()
    rig.stop_responder(responder)
    assert not responder.is_alive()
    assert not any('not-it' in r.getMessage() for r in caplog.records)

    # The requester (command line) exits 3 with one sentence.
    started = time.monotonic()
    result = secondary.run_cli('request', '--once', timeout=60)
    sentence = assert_one_clear_sentence(result)
    assert 'refused' in sentence
    assert 'wrong' not in result.stderr            # the password is never shown
    assert time.monotonic() - started < 14, 'a refusal should not wait for the timeout'
    assert secondary.count_records() == 0


def test_tls_replication(rig, tls_broker, caplog):
    primary = rig.primary(tls_broker, count=500, tls=True)
    secondary = rig.secondary(tls_broker, tls=True, page_size=200)
    assert secondary.load()['Replicator']['tls']['ca_certs'] == tls_broker.ca_certs
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    assert responder.conn.tls.enable and node.options.connection.tls.enable
    assert responder.conn.port == tls_broker.tls_port
    node.wait_caught_up(20)
    node.stop()
    assert_same(primary, secondary)
    assert error_lines(caplog) == []


def test_tls_wrong_ca(rig, tls_broker, tmp_path):
    other = make_certs(tmp_path / 'other-ca')
    primary = rig.primary(tls_broker, count=10, tls=True)
    secondary = rig.secondary(tls_broker, tls=True, ca_certs=other.ca_cert)
    responder = rig.start_responder(primary)
    result = secondary.run_cli('--connect-timeout', '2', 'request', '--once', timeout=60)
    sentence = assert_one_clear_sentence(result)
    assert 'certificate' in sentence.lower(), sentence
    assert responder.is_alive()
    assert secondary.count_records() == 0


def test_shared_secret_signs_and_rejects_forgeries(rig, broker, caplog, fault_report):
    """SPEC 5.7 (more in test_signing.py): pages carry sig; an unsigned forgery is dropped."""
    fault = Fault(fault_report,
                  'a well-formed but unsigned live record (a forgery), with a shared_secret',
                  'pages signed; the forgery dropped and counted; nothing stored')
    primary = rig.primary(broker, count=200, shared_secret='s3cret')
    secondary = rig.secondary(broker, shared_secret='s3cret')
    pages = rig.client(broker)
    pages.subscribe('replicate/response/#')
    responder = rig.start_responder(primary)
    node = rig.start_requester(secondary)
    node.wait_caught_up(15)
    assert_same(primary, secondary)
    last = START + 199 * 300

    # A forged record, well formed but unsigned.
    attacker = rig.client(broker)
    forged = {k: v for k, v in new_record(last + 300).items() if v is not None}
    forged['outTemp'] = 999.0
    attacker.publish('replicate/archive/weewx', json.dumps(forged).encode('utf-8'),
                     user_properties={'data_binding': KEY, 'protocol': '2', 'prev': last})
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        # until the forgery was handled: rejected, or (wrongly) stored
        wait_until(lambda: node.requester.rejected or secondary.last_timestamp() != last, 15,
                   'the forgery to be rejected')
    stored_forgery = secondary.last_timestamp() != last
    # every answer that reached the requester's response topic (those to its catch-up and to
    # its verification) was signed
    answers = pages.drain(0.2)
    signed = bool(answers) and all('sig' in user_properties(m) for m in answers)
    wait_mutual_knowledge(broker, primary, [secondary])
    node.stop()
    figures.assert_clean()
    assert not stored_forgery and signed and node.requester.rejected == 1
    assert responder.is_alive()
    assert_same(primary, secondary)
