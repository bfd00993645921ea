"""One run of the nemesis: build, inject the plan's faults on time, heal, settle, compare.

    run = Run(plan, workdir)
    run.run()          # prints the seed, the schedule as it runs, and the findings
    run.close()        # everything stopped by its PID (also after a failure or Ctrl-C)
    run.last_line()    # 'nemesis seed=... verdict=PASS|FAIL'
"""

import collections
import random
import re
import time

from tests.nemesis import check
from tests.nemesis.cluster import Cluster
from tests.nemesis.faults import inject
from tests.nemesis.schedule import PRIMARY
from tests.support.measure import DUPLICATE_INSERT, LOCKED
from tests.support.mutual import wait_mutual_knowledge
from tests.support.station import ENGINE_RESTART

SETTLE = 180.0               # seconds the system has to settle once healed


EDITS = ('import', 'correct', 'inf')     # the faults that edit the primary's past
FINGERPRINT_WAIT = 80     # the responder's fingerprint (every 60 s), its status, a verification


def say(text=''):
    print(text, flush=True)


class Run:
    def __init__(self, plan, workdir):
        self.plan = plan
        self.workdir = workdir
        self.cluster = None
        self.failures = []           # why the verdict is FAIL
        self.faults = 0
        self.injected = []           # the faults injected (not skipped)
        self.exited = set()          # stations whose weewxd exited without a fault
        self.hung = []               # brokers found hung (not answering) after a fault
        self.records = 0
        self.lost = 0
        self.summary_rows = 0
        self.duplicates = 0
        self.primary_restarts = 0
        self.compared = False
        self.last_edit = None        # wall time of the last edit of the primary's past

    @property
    def passed(self):
        return self.compared and not self.failures

    # --- the run -------------------------------------------------------------------------------

    def run(self):
        plan = self.plan
        say('nemesis seed=%d minutes=%g archive interval %d s, %d faults planned'
            % (plan.seed, plan.minutes, plan.interval, len(plan.faults)))
        say('schedule (seconds from the first fault):')
        for fault in plan.faults:
            say('  ' + fault.describe())
        self.cluster = Cluster(self.workdir, plan.interval, plan.minutes, log=say)
        started = time.monotonic()
        self.cluster.build()
        self.cluster.start()
        say('built and started in %.0f s (workdir %s); faults:' % (time.monotonic() - started,
                                                                   self.workdir))
        self._inject()
        self._settle()
        self._compare()

    def _inject(self):
        plan = self.plan
        t0 = time.monotonic()
        for i, fault in enumerate(plan.faults):
            delay = t0 + fault.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            at = time.monotonic() - t0
            rng = random.Random('%d/%d' % (plan.seed, i))
            try:
                note = inject(self.cluster, fault, rng)
            except Exception as e:
                note = 'HARNESS ERROR %s: %s' % (type(e).__name__, e)
                self.failures.append('the harness failed at %s: %s' % (fault.describe(), e))
            if not note.startswith('skipped'):
                self.faults += 1
                self.injected.append(fault)
                if fault.kind in EDITS:
                    self.last_edit = time.time()
            say('  %7.1f s  %s  -> %s' % (at, fault.describe()[10:].strip(), note))
            for name in self.cluster.hung_brokers():
                say('  %7.1f s  the %s does not answer (hung); killed and started again'
                    % (time.monotonic() - t0, name))
                self.hung.append(name)
                self.cluster.revive(name)
            for name, proc in self.cluster.procs.items():
                if not proc.alive() and name not in self.exited:
                    self.exited.add(name)
                    say('  %7.1f s  %s\'s weewxd exited by itself (status %s)'
                        % (time.monotonic() - t0, name, proc.returncode))
        rest = t0 + plan.minutes * 60 - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def _settle(self):
        """Heal everything, hold the primary, wait for mutual knowledge (at most SETTLE s)."""
        cluster = self.cluster
        deadline = time.monotonic() + SETTLE
        say('settling: healing every fault')
        cluster.heal()
        try:
            held = cluster.hold_primary(timeout=60)
            say('settling: the primary holds at %d' % held)
            names = cluster.secondaries()
            stations = [cluster.station[n] for n in names]
            while True:
                behind = [st.name for st in stations if st.last_timestamp() != held]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError('still behind the primary: %s' % ', '.join(behind))
                time.sleep(0.5)
            wait_mutual_knowledge(cluster.broker, cluster.station[PRIMARY], stations,
                                  timeout=max(deadline - time.monotonic(), 1.0))
            say('settled in %.0f s' % (SETTLE - (deadline - time.monotonic())))
            self._after_edits(deadline)
        except AssertionError as e:
            self.failures.append('did not settle within %.0f s' % SETTLE)
            say('settling FAILED: %s' % '\n'.join(str(e).splitlines()[:40]))

    def _after_edits(self, deadline):
        """An edit of the primary's past reaches a connected secondary through its
        verification, started by the responder's fingerprint (computed every minute):
        after the last edit, give it that minute and a verification's time (within the
        deadline) before the comparison tells."""
        if self.last_edit is None:
            return
        wait = min(self.last_edit + FINGERPRINT_WAIT - time.time(),
                   deadline - time.monotonic())
        if wait > 0:
            say('settling: %.0f s more for the verification of the last edit of the past'
                % wait)
            time.sleep(wait)

    def _compare(self):
        cluster = self.cluster
        cluster.stop_stations()
        primary = cluster.station[PRIMARY]
        self.records = primary.count_records()
        for name in cluster.secondaries():
            station = cluster.station[name]
            result = check.compare(primary, station)
            self.lost += result.lost
            self.summary_rows += result.summary_rows
            self.duplicates += station.log_text().count(DUPLICATE_INSERT)
            say('%-8s %d records, lost %d, summary rows differing %d'
                % (name, station.count_records(), result.lost, result.summary_rows))
            for table, lines in sorted(result.examples.items()):
                for line in lines:
                    say('    %s: %s' % (table, line))
        log = primary.log_text()
        self.primary_restarts = len(re.findall(ENGINE_RESTART, log))
        locked = log.count(LOCKED)
        for what, n in (('records lost', self.lost), ('summary rows differing',
                                                      self.summary_rows),
                        ('duplicates', self.duplicates),
                        ('engine restarts of the primary', self.primary_restarts),
                        ("'database is locked' on the primary", locked)):
            if n:
                self.failures.append('%s: %d' % (what, n))
        self.compared = True

    def table(self):
        """The faults injected, by kind, and what the run found, as a Markdown table."""
        kinds = collections.Counter(f.kind for f in self.injected)
        targets = collections.defaultdict(collections.Counter)
        for fault in self.injected:
            targets[fault.kind][fault.target + ('/' + fault.variant if fault.variant
                                                else '')] += 1
        lines = ['| fault | count | targets |', '|---|---|---|']
        for kind in sorted(kinds):
            lines.append('| %s | %d | %s |' % (kind, kinds[kind], ', '.join(
                '%s %d' % kv for kv in sorted(targets[kind].items()))))
        lines.append('| **all** | **%d** | records %d, secondaries %d: lost %d, summary rows '
                     'differing %d, duplicates %d, primary engine restarts %d |'
                     % (self.faults, self.records, len(self.cluster.secondaries()),
                        self.lost, self.summary_rows, self.duplicates,
                        self.primary_restarts))
        return '\n'.join(lines)

    def close(self):
        if self.cluster is not None:
            self.cluster.close()
            if self.compared:
                say(self.table())
        for failure in self.failures:
            say('FAIL: %s' % failure)

    def last_line(self):
        plan = self.plan
        return ('nemesis seed=%d minutes=%g faults=%d records=%d secondaries=%d lost=%d '
                'summary_rows_differing=%d duplicates=%d primary_restarts=%d verdict=%s'
                % (plan.seed, plan.minutes, self.faults, self.records,
                   len(self.cluster.secondaries()) if self.cluster else 0, self.lost,
                   self.summary_rows, self.duplicates, self.primary_restarts,
                   'PASS' if self.passed else 'FAIL'))
