"""A catch-up the primary refuses (a binding it does not serve) must not keep the secondary's
weewxd inside genStartupRecords: the refusal is logged once, naming the binding and what to
fix, and the engine starts."""

import re

import pytest

from tests.e2e.replication import INSTANCE
from tests.support.station import STARTED

pytestmark = pytest.mark.e2e

REFUSED = r"the responder refused the catch-up: unknown binding 'weewx/nosuch_binding'"


def test_a_refused_catchup_does_not_hang_the_start(replication):
    rep = replication()
    rep.seed(days=1)

    def ask_for_a_binding_the_primary_does_not_serve(config):
        config['Replicator']['Requester'][INSTANCE] = {
            'nosuch_binding': {'type': 'main', 'secondary_data_binding': 'wx_binding'}}
    rep.secondary.edit(ask_for_a_binding_the_primary_does_not_serve)

    pri = rep.start_primary()
    sec = rep.start_secondary()
    line = sec.wait_for_log(REFUSED, timeout=30)
    # it names the binding and says what to fix
    assert "[[[weewx]]] with the binding [[[[nosuch_binding]]]]" in line.string[
        line.start():line.string.find('\n', line.start())]
    sec.wait_for_log(r'driver: the catch-up of weewx/nosuch_binding was refused', timeout=10)
    sec.wait_for_log(STARTED, timeout=15)            # the engine runs: no hang
    assert sec.alive()
    assert len(re.findall(REFUSED, sec.log_text())) == 1
    sec.stop()
    assert pri.stop() == -15
