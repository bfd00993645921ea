"""scripts/package: the release archives that docs/install.md tells users to install.

The archives are built from this repository's committed files (at one commit, fixed for
the whole test), their contents are checked file by file against git, and the zip is
installed with the real 'weectl extension install' into a station made with 'weectl
station create', made a secondary with 'weectl station reconfigure', and run by a real
weewxd that catches up with a primary.
"""

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.test_install import read_conf, replicate_under_weewxd, weectl

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / 'scripts' / 'package'
NAME = 'weewx-mqttreplicate'


def git(*args):
    return subprocess.run(['git', *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope='module')
def commit():
    """The commit packaged by every test here (other commits may land meanwhile)."""
    return git('rev-parse', 'HEAD').strip()


def version_at(commit):
    text = git('show', '%s:bin/user/mqttreplicate/__init__.py' % commit)
    return re.search(r"^VERSION = '([^']+)'", text, re.M).group(1)


def expected_files(commit):
    """What a station needs, as committed: install.py, the package's modules, the
    Replication skin, README.md, changelog and docs/."""
    tracked = git('ls-tree', '-r', '--name-only', commit).split('\n')
    wanted = []
    for path in filter(None, tracked):
        if path in ('install.py', 'README.md', 'changelog') or path.startswith('docs/') \
                or re.fullmatch(r'bin/user/mqttreplicate/[^/]+\.py', path) \
                or re.fullmatch(r'skins/Replication/[^/]+', path):
            wanted.append(path)
    return sorted(wanted)


def package(out, commit, check=True):
    return subprocess.run([str(SCRIPT), str(out)], cwd='/', capture_output=True, text=True,
                          timeout=120, check=check, env=dict(os.environ, REF=commit))


def build(out, commit):
    """Run scripts/package; return (zip path, tar.gz path)."""
    proc = package(out, commit)
    version = version_at(commit)
    zip_path = out / ('%s-%s.zip' % (NAME, version))
    tar_path = out / ('%s-%s.tar.gz' % (NAME, version))
    assert proc.stdout.split() == [str(zip_path), str(tar_path)], proc.stdout
    assert zip_path.is_file() and tar_path.is_file()
    return zip_path, tar_path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archives_hold_what_a_station_needs_and_nothing_else(tmp_path, commit):
    zip_path, tar_path = build(tmp_path / 'out', commit)
    top = '%s-%s/' % (NAME, version_at(commit))
    files = expected_files(commit)
    assert 'install.py' in files and 'bin/user/mqttreplicate/__init__.py' in files
    assert 'bin/user/mqttreplicate/confeditor.py' in files and 'docs/install.md' in files
    assert {'skins/Replication/skin.conf', 'skins/Replication/index.html.tmpl',
            'bin/user/mqttreplicate/report.py'} <= set(files)

    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        zipped = {n[len(top):]: zf.read(n) for n in names if not n.endswith('/')}
    with tarfile.open(tar_path) as tf:
        members = tf.getmembers()
        tarred = {m.name[len(top):]: tf.extractfile(m).read() for m in members if m.isfile()}
        assert all(m.isfile() or m.isdir() for m in members)
    for contents, listing in ((zipped, names), (tarred, [m.name for m in members])):
        # A single top directory, as weectl requires, and exactly the files a station needs.
        assert all((n + '/').startswith(top) for n in listing), listing
        assert sorted(contents) == files
        for path in files:
            assert contents[path] == git_bytes(commit, path), path
        for path in contents:
            assert not path.startswith(('tests/', 'bench/', 'scripts/', '.')), path
            assert '__pycache__' not in path and not path.endswith('.pyc'), path

    # The same commit gives byte-identical archives.
    again_zip, again_tar = build(tmp_path / 'again', commit)
    assert digest(again_zip) == digest(zip_path)
    assert digest(again_tar) == digest(tar_path)


def git_bytes(commit, path):
    return subprocess.run(['git', 'show', '%s:%s' % (commit, path)], cwd=REPO, check=True,
                          capture_output=True).stdout


def test_an_unknown_ref_is_refused(tmp_path):
    proc = package(tmp_path / 'out', 'no-such-ref-anywhere', check=False)
    assert proc.returncode == 1
    assert "'no-such-ref-anywhere' is not a commit" in proc.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.e2e
def test_the_zip_installs_and_runs_under_weewxd(tmp_path, commit, stations, broker):
    zip_path, _ = build(tmp_path / 'out', commit)
    secondary = replicate_under_weewxd(stations, broker, install_from=zip_path)

    # What weectl installed is the archive's package, not a link to this repository.
    installed = secondary.root / 'bin' / 'user' / 'mqttreplicate'
    assert sorted(p.name for p in installed.glob('*.py')) == \
        sorted(Path(p).name for p in expected_files(commit) if p.startswith('bin/'))
    assert (installed / 'config.py').read_bytes() == \
        git_bytes(commit, 'bin/user/mqttreplicate/config.py')
    skin = secondary.root / 'skins' / 'Replication'
    assert sorted(p.name for p in skin.iterdir()) == \
        sorted(Path(p).name for p in expected_files(commit) if p.startswith('skins/'))
    assert (skin / 'skin.conf').read_bytes() == git_bytes(commit, 'skins/Replication/skin.conf')
    assert read_conf(secondary.config_path)['StdReport']['Replication']['skin'] == 'Replication'
    # WeeWX's report engine makes the page from the installed skin and search list.
    run = secondary.weectl('report', 'run', 'Replication')
    assert run.returncode == 0, run.stdout + run.stderr
    page = secondary.root / 'public_html' / 'replication' / 'index.html'
    text = page.read_text(encoding='utf-8')
    assert 'Secondary' in text or 'No replication status yet' in text, text
    log = (secondary.root / 'log' / 'weectl.log').read_text(errors='replace')
    assert 'Ignoring template' not in log and 'Traceback' not in log, log[-3000:]
    assert read_conf(secondary.config_path)['Station']['station_type'] == 'Replicator'

    # The command line and the driver, imported from the station's bin like weewxd does.
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    bin_dir = secondary.root / 'bin'
    shown = subprocess.run([sys.executable, '-m', 'user.mqttreplicate', '--config',
                            str(secondary.config_path), '--version'], cwd=bin_dir, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == 'MQTTReplicate %s' % version_at(commit)
    code = ('import user.mqttreplicate as m, weecfg\n'
            'print(m.__file__)\n'
            'print(m.DRIVER_NAME, m.DRIVER_VERSION)\n')
    imported = subprocess.run([sys.executable, '-c', code], cwd=bin_dir, env=env,
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    where, names = imported.stdout.split('\n')[:2]
    assert Path(where).resolve() == (installed / '__init__.py').resolve()
    assert names == 'Replicator %s' % version_at(commit)


def test_the_tar_gz_installs_and_uninstalls(tmp_path, commit, stations):
    _, tar_path = build(tmp_path / 'out', commit)
    station = stations('station', link_package=False)
    conf = station.config_path
    weectl('extension', 'install', str(tar_path), f'--config={conf}', '--yes', cwd=station.root)
    installed = station.root / 'bin' / 'user' / 'mqttreplicate'
    assert sorted(p.name for p in installed.glob('*.py')) == \
        sorted(Path(p).name for p in expected_files(commit) if p.startswith('bin/'))
    assert 'Replicator' in read_conf(conf)
    assert (station.root / 'skins' / 'Replication' / 'index.html.tmpl').is_file()
    listing = weectl('extension', 'list', f'--config={conf}', cwd=station.root)
    assert any(line.split()[:2] == ['MQTTReplicate', version_at(commit)]
               for line in listing.splitlines()), listing
    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}',
           cwd=station.root)
    assert not installed.exists()
    assert not (station.root / 'skins' / 'Replication').exists()
    assert 'Replicator' not in read_conf(conf)
    assert 'Replication' not in read_conf(conf)['StdReport']
