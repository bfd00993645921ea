"""Run the nemesis: python -m tests.nemesis [--minutes M] [--seed S] [--workdir DIR].

scripts/nemesis runs it in the repository's virtual environment. See tests/nemesis/__init__.py.
"""

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.nemesis.run import Run
from tests.nemesis.schedule import draw


os.environ['TZ'] = 'UTC'          # WeeWX's days are local: UTC, as every station here runs
time.tzset()


def _interrupt(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='scripts/nemesis', description=__doc__.split('\n')[0])
    parser.add_argument('--minutes', type=float, default=3.0,
                        help='how long faults are injected (default 3)')
    parser.add_argument('--seed', type=int, default=None,
                        help='the seed of the schedule (default: a random one, printed)')
    parser.add_argument('--workdir', default=None,
                        help='where the stations live (default: a new directory in /tmp, '
                             'removed after a PASS)')
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    plan = draw(seed, args.minutes)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='nemesis-%d-' % seed))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    run = Run(plan, workdir)
    try:
        run.run()
    except KeyboardInterrupt as e:
        run.failures.append('interrupted (%s)' % (e or 'Ctrl-C'))
    except Exception as e:
        traceback.print_exc()
        run.failures.append('the harness failed: %s: %s' % (type(e).__name__, e))
    finally:
        run.close()
    print('workdir: %s%s' % (workdir, '' if run.passed or args.workdir else ' (kept)'))
    if run.passed and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(run.last_line(), flush=True)
    return 0 if run.passed else 1


if __name__ == '__main__':
    sys.exit(main())
