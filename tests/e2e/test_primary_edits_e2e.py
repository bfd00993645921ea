"""Edits of the primary's past reach a secondary that stays connected (found by the nemesis,
issue 19: seeds 5 and 8 of ``scripts/nemesis --minutes 1.5``).

SPEC 2.1 promises records inserted or corrected on the primary out of order (imports,
backfills, fixes) on every secondary "within the verify window at once". A secondary
verifies after each catch-up and once a day; one that stays connected after the edit
never asks, and keeps its copy of the day until the next daily verification. The edits
are the nemesis's own (tests/nemesis/edits.py), made by another process while the primary's
weewxd runs, as a user's tools make them: a value corrected and that day's summaries
rebuilt, a record imported between two records of a past day.
"""

import random

import pytest

from tests.e2e.replication import KnownBug
from tests.nemesis import edits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERIFIED = r'requester: \S+: verified .* in sync'


@pytest.mark.xfail(strict=True, raises=KnownBug, reason=(
    'an edit of the primary\'s past reaches a connected secondary only at its next '
    'catch-up (a reconnection) or daily verification'))
@pytest.mark.parametrize('edit', ['correct', 'import'])
def test_an_edit_of_the_past_reaches_a_connected_secondary(replication, edit):
    rep = replication()
    rep.seed(days=3)
    pri = rep.start_primary()
    sec = rep.start_secondary()
    position, _ = rep.wait_caught_up(sec)
    rep.wait_live(since=position, n=5)
    sec.wait_for_log(VERIFIED, timeout=30)      # the verification after the catch-up is over
    rng = random.Random(19)
    rep.hold(pri)                 # between two records (see tests/nemesis/faults.py)
    if edit == 'correct':
        done = edits.correct(rep.primary, rng)
    else:
        done = edits.import_past(rep.primary, rng, 300)
    rep.release()
    assert 'no past record' not in done, done
    rep.wait_live(since=rep.secondary.last_timestamp(), n=30)   # a while of live records
    try:
        rep.finish(pri, [sec])
    except AssertionError as e:
        if 'differs' in str(e) or 'the secondary to drain' in str(e):
            raise KnownBug('%s\n%s' % (done, e))
        raise
