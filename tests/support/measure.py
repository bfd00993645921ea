"""What a fault case measures, for the fault table of docs/reliability.md.

    fault = Fault(fault_report, 'what is injected', 'what is checked')
    ... inject the fault ...
    with fault.settling(lambda: in_process(primary, secondary, caplog,
                                           stored=node.replica.stored)) as figures:
        node.wait_caught_up(60)           # the system settles
    ... wait_mutual_knowledge, stop ...
    figures.assert_clean()                # then the assertions

``settling`` measures when its block ends -- also when it fails (a timeout), so a failing
run still reports what it found -- and hands the figures to the ``fault_report`` fixture
before the test asserts on them.

The figures (each a count):

* lost -- the primary's dateTimes missing on the secondary;
* duplicates -- records stored twice on the secondary. The archive table's primary key makes
  a second row per dateTime impossible, so what is counted is what a duplicate leaves
  behind: a requester whose ``stored`` counter exceeds the rows it added (it counted a record
  twice), and WeeWX's ``Unable to add record`` (the insert of a dateTime already there,
  logged by weewx.manager at error level);
* restarts -- engine restarts (``retrying...``) in the primary weewxd's log; None when the
  primary is an in-process responder;
* locked -- ``database is locked`` lines of the primary (its weewxd log, or the captured
  log records of the test process and any command-line primary's output).
"""

import contextlib
import dataclasses
import re
from typing import Iterable, Optional

from tests.support.station import ENGINE_RESTART, Station

DUPLICATE_INSERT = 'Unable to add record'
LOCKED = 'database is locked'


@dataclasses.dataclass
class Figures:
    lost: int = 0
    duplicates: int = 0
    restarts: Optional[int] = None
    locked: int = 0
    measured: bool = False

    def as_report(self):
        return {'lost': self.lost, 'duplicates': self.duplicates, 'restarts': self.restarts,
                'locked': self.locked}

    def assert_clean(self):
        """Nothing lost, nothing stored twice, no engine restart, no locked database."""
        assert self.measured, 'the figures were never measured'
        assert (self.lost, self.duplicates, self.restarts or 0, self.locked) == (0, 0, 0, 0), \
            'lost %d, duplicates %d, restarts %s, locked %d' % (
                self.lost, self.duplicates, self.restarts, self.locked)


class Fault:
    """One row of the fault table: what a test injects and what it checks."""

    def __init__(self, fault_report, fault, checked):
        self.fault_report = fault_report
        self.fault = fault
        self.checked = checked

    def settling(self, measure):
        """settling(measure, fault=self)."""
        return settling(measure, self)

    def report(self, figures):
        self.fault_report(self.fault, self.checked, **figures.as_report())


@contextlib.contextmanager
def settling(measure, fault=None):
    """Run the block (the system settling after a fault); when it ends, or fails, measure
    (measure() -> Figures) and give the figures to the fault's row, if any. Yields the
    Figures, filled on exit."""
    figures = Figures()

    def done():
        measured = measure()
        for field in ('lost', 'duplicates', 'restarts', 'locked'):
            setattr(figures, field, getattr(measured, field))
        figures.measured = True
        if fault is not None:
            fault.report(figures)

    try:
        yield figures
    except BaseException:
        try:
            done()
        except Exception:               # the block's own failure is what matters
            pass
        raise
    done()


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------

def timestamps(station: Station, binding: str = 'wx_binding') -> set:
    """Every dateTime of a station's binding (empty if its database does not exist yet),
    SQLite or MySQL."""
    return station.timestamps(binding)


def lost(primary: Station, secondary: Station, bindings: Iterable[str] = ('wx_binding',)) -> int:
    """How many of the primary's records (all bindings) the secondary does not have."""
    return sum(len(timestamps(primary, b) - timestamps(secondary, b)) for b in bindings)


def counted_twice(stored: int, rows_added: int) -> int:
    """Records a requester counted as stored beyond the rows it added."""
    return max(stored - rows_added, 0)


def log_count(source, needle: str) -> int:
    """Lines containing needle in a log text, or captured log records (caplog) whose message
    contains it."""
    if source is None:
        return 0
    if isinstance(source, str):
        return sum(1 for line in source.splitlines() if needle in line)
    records = getattr(source, 'records', source)
    return sum(1 for record in records if needle in record.getMessage())


def in_process(primary: Station, secondary: Station, caplog, *, stored: int,
               rows_before: int = 0, primary_output: str = '') -> Figures:
    """Figures of an in-process case (the requester and usually the responder run in the
    test process, their log records in caplog). stored: the requesters' stored counters
    (summed over the runs); rows_before: the secondary's rows when they started;
    primary_output: the output of a command-line responder, if one ran."""
    rows_added = secondary.count_records() - rows_before
    return Figures(
        lost=lost(primary, secondary),
        duplicates=counted_twice(stored, rows_added) + log_count(caplog, DUPLICATE_INSERT),
        restarts=None,
        locked=log_count(caplog, LOCKED) + log_count(primary_output, LOCKED))


def end_to_end(primary: Station, secondaries: Iterable[Station],
               bindings: Iterable[str] = ('wx_binding',)) -> Figures:
    """Figures of two (or more) weewxd stations, from their databases and logs."""
    secondaries = list(secondaries)
    bindings = list(bindings)
    primary_log = primary.log_text()
    return Figures(
        lost=sum(lost(primary, st, bindings) for st in secondaries),
        duplicates=sum(log_count(st.log_text(), DUPLICATE_INSERT) for st in secondaries),
        restarts=len(re.findall(ENGINE_RESTART, primary_log)),
        locked=log_count(primary_log, LOCKED))
