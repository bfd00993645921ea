"""The extension installer and the configuration editor, end to end with the real weectl.

A throwaway station is created with 'weectl station create'; then the
extension is installed from this repository, the station is made a secondary
with 'weectl station reconfigure --driver=user.mqttreplicate', and the
extension is uninstalled again.  Every command runs in a subprocess, as a
user would run it.
"""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import configobj
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE_SRC = REPO / 'bin' / 'user' / 'mqttreplicate'
SERVICE = 'user.mqttreplicate.MQTTResponder'
REMOVED_SERVICES = ('weewx.engine.StdCalibrate', 'weewx.engine.StdQC',
                    'weewx.wxservices.StdWXCalculate')

# weectl logs to syslog by default; without /dev/log (containers, CI) every
# line becomes a "--- Logging error ---" traceback.  Log to a file instead.
LOGGING = {
    'root': {'level': 'INFO', 'handlers': ['file']},
    'handlers': {
        'file': {
            'level': 'DEBUG',
            'formatter': 'standard',
            'class': 'logging.FileHandler',
            'filename': 'log/{process_name}.log',
        },
    },
}

# Written into the *installed station's* copy of the package, and only when
# the package in this repository does not provide what weectl needs yet.
STAND_IN_INIT = '''\
"""Stand-in written by tests/test_install.py: the real package is not there yet."""
from .confeditor import confeditor_loader  # noqa: F401

DRIVER_NAME = 'MQTTReplicate'
DRIVER_VERSION = '0.0'


def loader(config_dict, engine):
    raise NotImplementedError('stand-in package')
'''


def package_is_ready():
    """True once the repository's package has its __init__.py.

    From then on the real package is what weectl imports, and a failure is a real failure.
    """
    return (PACKAGE_SRC / '__init__.py').is_file()


def weectl(*args, cwd=None):
    """Run weectl with this interpreter; return its stdout, fail with its output."""
    cmd = [sys.executable, '-m', 'weectl', *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc.stdout


def read_conf(path):
    return configobj.ConfigObj(str(path), encoding='utf-8', interpolation=False,
                               file_error=True)


def as_list(value):
    if isinstance(value, str):
        return [v.strip() for v in value.split(',') if v.strip()]
    return list(value)


def make_station(tmp_path):
    """A new station at tmp_path/st, logging to a file; returns its weewx.conf."""
    root = tmp_path / 'st'
    weectl('station', 'create', str(root), '--no-prompt', cwd=tmp_path)
    conf = root / 'weewx.conf'
    assert conf.is_file()
    config = read_conf(conf)
    config['Logging'] = LOGGING
    config.write()
    return conf


def load_install_module():
    """Import install.py from the repository root under a private name."""
    spec = importlib.util.spec_from_file_location('mqttreplicate_install', REPO / 'install.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# install.py on its own
# ---------------------------------------------------------------------------------------------

def test_installer_lists_every_module_and_reads_the_version():
    installer = load_install_module().loader()
    assert installer['name'] == 'MQTTReplicate'
    assert SERVICE in as_list(installer['restful_services'])

    (dest, files), = installer['files']
    assert dest == 'bin/user'
    expected = sorted('bin/user/mqttreplicate/' + p.name for p in PACKAGE_SRC.glob('*.py'))
    assert files == expected
    assert 'bin/user/mqttreplicate/confeditor.py' in files

    init = PACKAGE_SRC / '__init__.py'
    if init.is_file() and "VERSION = '" in init.read_text(encoding='utf-8'):
        text = init.read_text(encoding='utf-8')
        version = text.split("VERSION = '", 1)[1].split("'", 1)[0]
        assert installer['version'] == version
    else:
        assert installer['version'] == '0.1.0'


def test_installer_never_declares_station_keys():
    installer = load_install_module().loader()
    config = installer['config']
    assert list(config.keys()) == ['MQTTReplicate']
    stanza = config['MQTTReplicate']
    assert stanza['driver'] == 'user.mqttreplicate'
    assert stanza['Requester']['enable'] == 'false'
    assert stanza['Responder']['enable'] == 'false'
    assert stanza['Requester']['weewx']['wx_binding']['type'] == 'main'
    assert stanza['Requester']['weewx']['wx_binding']['secondary_data_binding'] == 'wx_binding'
    assert stanza['Responder']['weewx']['wx_binding']['type'] == 'main'


# ---------------------------------------------------------------------------------------------
# install -> reconfigure -> uninstall, with the real weectl
# ---------------------------------------------------------------------------------------------

def test_install_reconfigure_uninstall(tmp_path):
    conf = make_station(tmp_path)
    root = conf.parent
    installed = root / 'bin' / 'user' / 'mqttreplicate'
    before = read_conf(conf)
    station_before = dict(before['Station'])
    assert station_before['station_type'] == 'Simulator'

    # ---- install -----------------------------------------------------------------------------
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)

    sources = sorted(p.name for p in PACKAGE_SRC.glob('*.py'))
    assert sources, 'the package has no modules'
    assert sorted(p.name for p in installed.glob('*.py')) == sources
    for name in sources:
        assert (installed / name).read_bytes() == (PACKAGE_SRC / name).read_bytes()
    assert (root / 'bin' / 'user' / 'installer' / 'MQTTReplicate' / 'install.py').is_file()

    config = read_conf(conf)
    services = config['Engine']['Services']
    assert as_list(services['restful_services']).count(SERVICE) == 1
    # The stock services are still there, in their order.
    assert as_list(services['restful_services'])[:-1] == \
        as_list(before['Engine']['Services']['restful_services'])
    stanza = config['MQTTReplicate']
    assert stanza['driver'] == 'user.mqttreplicate'
    assert stanza['Responder']['enable'] == 'false'
    assert stanza['Requester']['weewx']['wx_binding']['type'] == 'main'
    assert dict(config['Station']) == station_before
    # The stanza's comments made it into weewx.conf.
    text = conf.read_text(encoding='utf-8')
    assert '# The primary role' in text
    assert 'weectl station reconfigure --driver=user.mqttreplicate' in text

    # 'weectl extension list' finds it, with the package's version.
    listing = weectl('extension', 'list', f'--config={conf}', cwd=tmp_path)
    version = load_install_module().read_version()
    assert any(line.split()[:2] == ['MQTTReplicate', version] for line in listing.splitlines())

    # ---- installing again changes nothing ----------------------------------------------------
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    again = read_conf(conf)
    assert as_list(again['Engine']['Services']['restful_services']).count(SERVICE) == 1
    assert again['MQTTReplicate'] == config['MQTTReplicate']

    # ---- reconfigure: make it a secondary ----------------------------------------------------
    stand_in = not package_is_ready()
    if stand_in:
        (installed / '__init__.py').write_text(STAND_IN_INIT, encoding='utf-8')
    # Software record generation, to see the editor switch it.
    config = read_conf(conf)
    config['StdArchive']['record_generation'] = 'software'
    config.write()
    process_before = as_list(config['Engine']['Services']['process_services'])

    out = weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
                 f'--config={conf}', cwd=tmp_path)

    config = read_conf(conf)
    assert config['Station']['station_type'] == 'MQTTReplicate'
    assert config['StdArchive']['record_generation'] == 'hardware'
    process = as_list(config['Engine']['Services']['process_services'])
    assert process == [s for s in process_before if s not in REMOVED_SERVICES]
    assert 'weewx.engine.StdConvert' in process
    for svc in REMOVED_SERVICES:
        assert svc not in process
        assert f'MQTTReplicate: removed {svc} from process_services' in out
    assert 'MQTTReplicate: set [StdArchive] record_generation = hardware' in out
    # The other service groups are untouched.
    for group in ('prep_services', 'xtype_services', 'archive_services', 'restful_services',
                  'report_services'):
        assert as_list(config['Engine']['Services'][group]) == \
            as_list(again['Engine']['Services'][group])
    # The installed stanza was kept (not replaced by the default one), driver set.
    stanza = config['MQTTReplicate']
    assert stanza['driver'] == 'user.mqttreplicate'
    assert stanza['Requester']['enable'] == 'true'
    assert stanza['Responder']['enable'] == 'false'
    assert stanza['Requester']['weewx']['wx_binding']['secondary_data_binding'] == 'wx_binding'
    # ... and placed right after [Station].
    keys = list(config.keys())
    assert keys.index('MQTTReplicate') == keys.index('Station') + 1
    # The other [Station] keys are as they were.
    station = dict(config['Station'])
    station.pop('station_type')
    assert station == {k: v for k, v in station_before.items() if k != 'station_type'}

    # Reconfiguring again finds nothing to change, and says nothing.
    out = weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
                 f'--config={conf}', cwd=tmp_path)
    assert 'MQTTReplicate:' not in out

    # A compiled copy in __pycache__, as a weewxd run leaves behind.
    subprocess.run([sys.executable, '-m', 'compileall', '-q', str(installed)], check=True)
    assert list((installed / '__pycache__').glob('*.pyc'))

    # ---- uninstall ---------------------------------------------------------------------------
    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)

    assert not installed.exists(), sorted(str(p) for p in installed.rglob('*'))
    assert not (root / 'bin' / 'user' / 'installer' / 'MQTTReplicate').exists()
    # WeeWX's own user directory is intact.
    assert (root / 'bin' / 'user' / 'extensions.py').is_file()

    config = read_conf(conf)
    services = config['Engine']['Services']
    assert SERVICE not in as_list(services['restful_services'])
    assert as_list(services['restful_services']) == \
        as_list(before['Engine']['Services']['restful_services'])
    assert 'MQTTReplicate' not in config
    # [Station] keeps every key, station_type included (the user switches the driver back).
    assert config['Station']['station_type'] == 'MQTTReplicate'
    assert set(config['Station']) == set(station_before)

    if stand_in:
        pytest.xfail('reconfigure ran against a stand-in __init__.py: '
                     'bin/user/mqttreplicate/__init__.py does not exist yet')


def test_install_from_a_zip(tmp_path):
    """A release archive: one top directory holding install.py and bin/."""
    archive = tmp_path / 'weewx-mqttreplicate.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(REPO / 'install.py', 'weewx-mqttreplicate/install.py')
        for path in sorted(PACKAGE_SRC.glob('*.py')):
            zf.write(path, 'weewx-mqttreplicate/bin/user/mqttreplicate/' + path.name)
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(archive), f'--config={conf}', '--yes', cwd=tmp_path)

    installed = conf.parent / 'bin' / 'user' / 'mqttreplicate'
    assert sorted(p.name for p in installed.glob('*.py')) == \
        sorted(p.name for p in PACKAGE_SRC.glob('*.py'))
    assert 'MQTTReplicate' in read_conf(conf)

    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)
    assert not installed.exists()


def test_uninstall_keeps_what_the_user_added(tmp_path):
    """Uninstall deletes only what the installer declared."""
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    config = read_conf(conf)
    config['MQTTReplicate']['Responder']['workers'] = '2'
    config.write()

    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)

    config = read_conf(conf)
    assert config['MQTTReplicate'] == {'Responder': {'workers': '2'}}
    assert config['Station']['station_type'] == 'Simulator'


# ---------------------------------------------------------------------------------------------
# The configuration editor on its own
# ---------------------------------------------------------------------------------------------

def load_confeditor():
    spec = importlib.util.spec_from_file_location('mqttreplicate_confeditor',
                                                  PACKAGE_SRC / 'confeditor.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('process_services', [
    'weewx.engine.StdConvert, weewx.engine.StdCalibrate, weewx.engine.StdQC, '
    'weewx.wxservices.StdWXCalculate, user.other.Service',
    ['weewx.engine.StdConvert', 'weewx.engine.StdCalibrate', 'weewx.engine.StdQC',
     'weewx.wxservices.StdWXCalculate', 'user.other.Service'],
])
def test_confeditor_modify_config(process_services, capsys):
    editor = load_confeditor().confeditor_loader()
    config = configobj.ConfigObj(interpolation=False)
    config['StdArchive'] = {'record_generation': 'software'}
    config['Engine'] = {'Services': {'process_services': process_services}}
    config['MQTTReplicate'] = {'Requester': {'enable': 'false'}}

    editor.modify_config(config)

    assert config['StdArchive']['record_generation'] == 'hardware'
    assert as_list(config['Engine']['Services']['process_services']) == \
        ['weewx.engine.StdConvert', 'user.other.Service']
    assert config['MQTTReplicate']['Requester']['enable'] == 'true'
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        'MQTTReplicate: set [StdArchive] record_generation = hardware (was software)',
        'MQTTReplicate: removed weewx.engine.StdCalibrate from process_services',
        'MQTTReplicate: removed weewx.engine.StdQC from process_services',
        'MQTTReplicate: removed weewx.wxservices.StdWXCalculate from process_services',
        'MQTTReplicate: set [MQTTReplicate] [[Requester]] enable = true',
    ]

    # A second pass has nothing to do and prints nothing.
    editor.modify_config(config)
    assert capsys.readouterr().out == ''


def test_confeditor_adds_missing_stdarchive(capsys):
    editor = load_confeditor().confeditor_loader()
    config = configobj.ConfigObj(interpolation=False)
    editor.modify_config(config)
    assert config['StdArchive']['record_generation'] == 'hardware'
    assert capsys.readouterr().out.splitlines() == \
        ['MQTTReplicate: set [StdArchive] record_generation = hardware']


def test_confeditor_default_stanza_parses():
    editor = load_confeditor().confeditor_loader()
    stanza = configobj.ConfigObj(editor.default_stanza.splitlines(), interpolation=False)
    section = stanza['MQTTReplicate']
    assert section['driver'] == 'user.mqttreplicate'
    assert section['host'] == 'localhost'
    assert section['port'] == '1883'
    assert section['Requester']['weewx']['wx_binding']['type'] == 'main'
    assert 'Station' not in stanza
    # With no existing stanza, weectl asks the editor for this one.
    assert editor.get_conf(None) == editor.default_stanza


def test_confeditor_prompts_for_host_and_port(monkeypatch):
    editor = load_confeditor().confeditor_loader()
    answers = iter(['broker.example.net', 'notaport', '70000', '8883'])
    monkeypatch.setattr('builtins.input', lambda prompt='': next(answers))
    editor.existing_options = {'host': 'localhost', 'port': '1883'}
    assert editor.prompt_for_settings() == {'host': 'broker.example.net', 'port': '8883'}


def test_confeditor_prompt_answers_where_the_requester_sets_the_option(monkeypatch):
    editor = load_confeditor().confeditor_loader()
    answers = iter(['', ''])
    monkeypatch.setattr('builtins.input', lambda prompt='': next(answers))
    editor.existing_options = {'port': '1884', 'Requester': {'host': 'primary.lan'}}
    assert editor.prompt_for_settings() == {'Requester': {'host': 'primary.lan'},
                                            'port': '1884'}


def test_confeditor_imports_only_weewx():
    """The module can be loaded by weectl whatever else is installed."""
    code = ("import sys, importlib.util\n"
            "spec = importlib.util.spec_from_file_location('ce', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('paho', 'user')]\n"
            "assert not bad, bad\n"
            "assert m.confeditor_loader().__class__.__name__ == 'MQTTReplicateConfEditor'\n")
    subprocess.run([sys.executable, '-c', code, str(PACKAGE_SRC / 'confeditor.py')],
                   check=True, cwd=os.path.dirname(__file__))
