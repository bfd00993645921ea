"""The nemesis's schedule: every fault of a run, drawn up front from the seed.

    plan = draw(seed=7, minutes=1.5)
    plan.interval                    # the primary's archive interval: 60, 300 or 1800 s
    for fault in plan.faults: ...    # Fault(at, kind, target, hold, variant), at in seconds
                                     # from the start of the faults

The same seed and minutes give the same plan, whatever happens while it runs.
"""

import dataclasses
import random
from typing import List, Optional

INTERVALS = (60, 300, 1800)

# The stations: the primary and the secondaries that run from the start; JOINER joins in
# the middle (its time drawn with the plan).
PRIMARY = 'primary'
SECONDARIES = ('sqlite', 'mariadb', 'bridged')
JOINER = 'joiner'
SQLITE_SECONDARIES = ('sqlite', JOINER)     # a database file another process can lock
TMPFS_SECONDARY = 'sqlite'                  # its database on a small tmpfs

# Links through the suite's TCP proxy: each station's to its broker, and the bridge's.
BRIDGE = 'bridge'
# Processes that can be frozen besides the weewxd of each station.
BROKER = 'broker'
INTERNET = 'internet-broker'
MARIADBD = 'mariadbd'

# kind: (weight, shortest hold, longest hold) -- the hold is how long the fault lasts.
KINDS = {
    'kill9':          (3, 2.0, 8.0),     # kill -9 of a weewxd, started again after the hold
    'sigterm-catchup': (2, 8.0, 15.0),   # a secondary stopped, then SIGTERM in its catch-up
    'sigstop':        (3, 2.0, 10.0),    # SIGSTOP, SIGCONT after the hold
    'broker-restart': (2, 1.0, 4.0),     # variants: persistent, forgetful, crash
    'partition':      (2, 3.0, 15.0),    # connections cut, new ones refused
    'trickle':        (2, 4.0, 12.0),    # 1,500 bytes a second each way
    'freeze':         (2, 2.0, 12.0),    # nothing forwarded, connections kept open
    'disk-full':      (1, 3.0, 10.0),
    'db-locked':      (1, 3.0, 12.0),    # BEGIN EXCLUSIVE held by another process
    'import':         (1, 0.0, 0.0),     # a record imported in the past on the primary
    'correct':        (1, 0.0, 0.0),     # a value corrected within the verify window
    'inf':            (1, 0.0, 0.0),     # an inf stored in a record of the primary
}
BROKER_VARIANTS = ('persistent', 'forgetful', 'crash')


@dataclasses.dataclass(frozen=True)
class Fault:
    at: float                 # seconds after the start of the faults
    kind: str
    target: str
    hold: float = 0.0
    variant: Optional[str] = None

    def describe(self) -> str:
        text = '%7.1f s  %-16s %-16s' % (self.at, self.kind, self.target)
        if self.hold:
            text += ' hold %4.1f s' % self.hold
        if self.variant:
            text += ' (%s)' % self.variant
        return text


@dataclasses.dataclass(frozen=True)
class Plan:
    seed: int
    minutes: float
    interval: int
    faults: List[Fault]


def _targets(kind, joined):
    secondaries = SECONDARIES + ((JOINER,) if joined else ())
    stations = (PRIMARY,) + secondaries
    if kind == 'kill9':
        return stations
    if kind == 'sigterm-catchup':
        return secondaries
    if kind == 'sigstop':
        return stations + (BROKER, INTERNET, MARIADBD)
    if kind == 'broker-restart':
        return (BROKER, INTERNET)
    if kind in ('partition', 'trickle', 'freeze'):
        return stations + (BRIDGE,)
    if kind == 'disk-full':
        return (TMPFS_SECONDARY,)
    if kind == 'db-locked':
        return SQLITE_SECONDARIES if joined else SQLITE_SECONDARIES[:1]
    return (PRIMARY,)


def draw(seed: int, minutes: float) -> Plan:
    """The plan of a run: the archive interval, when the joiner joins, and a fault every
    few seconds (each after the previous one healed, 2 to 6 s later), until 5 s before
    the end."""
    rng = random.Random(seed)
    interval = rng.choice(INTERVALS)
    duration = minutes * 60.0
    join_at = round(rng.uniform(0.2, 0.5) * duration, 1)
    kinds = sorted(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    faults = []
    joined = False
    t = round(rng.uniform(2.0, 5.0), 1)
    while t < duration - 5.0:
        if not joined and t >= join_at:
            faults.append(Fault(t, 'join', JOINER))
            joined = True
            t = round(t + rng.uniform(2.0, 6.0), 1)
            continue
        kind = rng.choices(kinds, weights)[0]
        _, low, high = KINDS[kind]
        target = rng.choice(_targets(kind, joined))
        hold = round(rng.uniform(low, high), 1) if high else 0.0
        variant = rng.choice(BROKER_VARIANTS) if kind == 'broker-restart' else None
        faults.append(Fault(t, kind, target, hold, variant))
        t = round(t + hold + rng.uniform(2.0, 6.0), 1)
    if not joined:
        faults.append(Fault(round(min(join_at, max(duration - 5.0, 0.0)), 1), 'join', JOINER))
    faults.sort(key=lambda f: f.at)
    return Plan(seed, minutes, interval, faults)
