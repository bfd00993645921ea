"""The extension installer and the configuration editor, end to end with the real weectl.

A throwaway station is created with 'weectl station create'; then the
extension is installed from this repository, the station is made a secondary
with 'weectl station reconfigure --driver=user.mqttreplicate', and the
extension is uninstalled again.  Every command runs in a subprocess, as a
user would run it.

The stanza is [Replicator] (SPEC 4).  A station of the earlier extension has
its stanza as [MQTTReplicate] (EARLIER_STANZA): it upgrades without an edit
(no [Replicator] added, station_type stays MQTTReplicate), and a secondary
upgraded that way replicates under a real weewxd.
"""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import configobj
import pytest

from tests.support.station import TEST_HEARTBEAT
from user.mqttreplicate import config as cfg

REPO = Path(__file__).resolve().parent.parent
PACKAGE_SRC = REPO / 'bin' / 'user' / 'mqttreplicate'
SKIN_SRC = REPO / 'skins' / 'Replication'
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

# The stanza as the earlier extension's installer wrote it (its STANZA, named
# [MQTTReplicate]), after 'weectl station reconfigure' made the station a
# secondary: what an upgrading user has in weewx.conf.
EARLIER_STANZA = """
[MQTTReplicate]
    # MQTTReplicate copies WeeWX databases from a primary station to
    # secondary stations through an MQTT broker.

    # The driver used when this station is a secondary.
    driver = user.mqttreplicate

    # The MQTT broker.
    host = {host}
    port = {port}

    # The secondary role: a WeeWX driver that fetches the primary's records.
    [[Requester]]
        enable = {requester}

        # An instance name: it must match the primary's [[Responder]] instance.
        [[[weewx]]]
            [[[[wx_binding]]]]
                type = main
                # The binding on this station where the records are stored.
                secondary_data_binding = wx_binding

    # The primary role.
    [[Responder]]
        enable = {responder}
        [[[weewx]]]
            [[[[wx_binding]]]]
                type = main
"""


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


def give_earlier_stanza(conf, role='secondary', host='localhost', port=1883):
    """Make conf's station one that runs the earlier extension, as its users have it: the
    [MQTTReplicate] stanza, the responder service and, for a secondary, the settings the
    earlier 'weectl station reconfigure' made (station_type = MQTTReplicate, hardware
    record generation, no StdCalibrate / StdQC / StdWXCalculate)."""
    secondary = role == 'secondary'
    with open(conf, 'a', encoding='utf-8') as fd:
        fd.write(EARLIER_STANZA.format(host=host, port=port,
                                       requester='true' if secondary else 'false',
                                       responder='false' if secondary else 'true'))
    config = read_conf(conf)
    services = config['Engine']['Services']
    services['restful_services'] = as_list(services['restful_services']) + [SERVICE]
    if secondary:
        config['Station']['station_type'] = 'MQTTReplicate'
        config['StdArchive']['record_generation'] = 'hardware'
        services['process_services'] = [s for s in as_list(services['process_services'])
                                        if s not in REMOVED_SERVICES]
    config.write()
    return config


def read_config_dict(conf):
    """weewx.conf as weewxd and the command line read it."""
    import weecfg
    return weecfg.read_config(str(conf))[1]


def services_as_lists(config):
    """config as nested dicts, with [Engine][[Services]] groups as lists (so that a group
    written back as a list equals the same group written as a comma-separated string)."""
    plain = config.dict()
    groups = plain.get('Engine', {}).get('Services', {})
    for group, value in groups.items():
        groups[group] = as_list(value)
    return plain


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

    (dest, files), (skin_dest, skin_files) = installer['files']
    assert dest == 'bin/user'
    expected = sorted('bin/user/mqttreplicate/' + p.name for p in PACKAGE_SRC.glob('*.py'))
    assert files == expected
    assert 'bin/user/mqttreplicate/confeditor.py' in files
    assert skin_dest == 'skins/Replication'
    assert skin_files == sorted('skins/Replication/' + p.name for p in SKIN_SRC.iterdir())
    # What uninstall deletes when the skin is not next to install.py: the same files.
    assert sorted(load_install_module().SKIN_FILES) == sorted(p.name for p in SKIN_SRC.iterdir())

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
    assert list(config.keys()) == ['Replicator', 'StdReport']
    # The report, on both roles: WeeWX puts the station's HTML_ROOT in front.
    assert config['StdReport'] == {'Replication': {'skin': 'Replication',
                                                   'HTML_ROOT': 'replication',
                                                   'enable': 'true'}}
    stanza = config['Replicator']
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
    skin = root / 'skins' / 'Replication'
    assert sorted(p.name for p in skin.iterdir()) == sorted(p.name for p in SKIN_SRC.iterdir())
    for path in SKIN_SRC.iterdir():
        assert (skin / path.name).read_bytes() == path.read_bytes()

    config = read_conf(conf)
    services = config['Engine']['Services']
    assert as_list(services['restful_services']).count(SERVICE) == 1
    # The stock services are still there, in their order.
    assert as_list(services['restful_services'])[:-1] == \
        as_list(before['Engine']['Services']['restful_services'])
    assert 'MQTTReplicate' not in config
    stanza = config['Replicator']
    assert stanza['driver'] == 'user.mqttreplicate'
    assert stanza['Responder']['enable'] == 'false'
    assert stanza['Requester']['weewx']['wx_binding']['type'] == 'main'
    assert dict(config['Station']) == station_before
    # The report, enabled, below the station's HTML_ROOT, before the FTP and RSYNC reports.
    assert config['StdReport']['Replication'] == {
        'skin': 'Replication', 'HTML_ROOT': 'public_html/replication', 'enable': 'true'}
    reports = config['StdReport'].sections
    assert reports.index('Replication') < reports.index('FTP') < reports.index('RSYNC')
    assert set(reports) - {'Replication'} == set(before['StdReport'].sections)
    # The stanza's comments made it into weewx.conf.
    text = conf.read_text(encoding='utf-8')
    assert '# The primary role' in text
    assert 'weectl station reconfigure --driver=user.mqttreplicate' in text
    assert "# MQTTReplicate's page: how this station's replication stands" in text

    # 'weectl extension list' finds it, with the package's version.
    listing = weectl('extension', 'list', f'--config={conf}', cwd=tmp_path)
    version = load_install_module().read_version()
    assert any(line.split()[:2] == ['MQTTReplicate', version] for line in listing.splitlines())

    # ---- installing again changes nothing ----------------------------------------------------
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    again = read_conf(conf)
    assert as_list(again['Engine']['Services']['restful_services']).count(SERVICE) == 1
    assert again['Replicator'] == config['Replicator']

    # ---- reconfigure: make it a secondary ----------------------------------------------------
    # Software record generation, to see the editor switch it.
    config = read_conf(conf)
    config['StdArchive']['record_generation'] = 'software'
    config.write()
    process_before = as_list(config['Engine']['Services']['process_services'])

    out = weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
                 f'--config={conf}', cwd=tmp_path)

    config = read_conf(conf)
    assert config['Station']['station_type'] == 'Replicator'
    assert 'MQTTReplicate' not in config
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
    stanza = config['Replicator']
    assert stanza['driver'] == 'user.mqttreplicate'
    assert stanza['Requester']['enable'] == 'true'
    assert stanza['Responder']['enable'] == 'false'
    assert stanza['Requester']['weewx']['wx_binding']['secondary_data_binding'] == 'wx_binding'
    # ... and placed right after [Station].
    keys = list(config.keys())
    assert keys.index('Replicator') == keys.index('Station') + 1
    # The other [Station] keys are as they were.
    station = dict(config['Station'])
    station.pop('station_type')
    assert station == {k: v for k, v in station_before.items() if k != 'station_type'}
    # The driver reads it.
    options = cfg.parse_requester(config)
    assert options.connection.section == 'Replicator'

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
    assert not skin.exists(), sorted(str(p) for p in skin.rglob('*'))
    assert (root / 'skins' / 'Seasons' / 'skin.conf').is_file()
    assert not (root / 'bin' / 'user' / 'installer' / 'MQTTReplicate').exists()
    # WeeWX's own user directory is intact.
    assert (root / 'bin' / 'user' / 'extensions.py').is_file()

    config = read_conf(conf)
    services = config['Engine']['Services']
    assert SERVICE not in as_list(services['restful_services'])
    assert as_list(services['restful_services']) == \
        as_list(before['Engine']['Services']['restful_services'])
    assert 'Replicator' not in config and 'MQTTReplicate' not in config
    assert config['StdReport'].sections == before['StdReport'].sections
    # [Station] keeps every key, station_type included (the user switches the driver back).
    assert config['Station']['station_type'] == 'Replicator'
    assert set(config['Station']) == set(station_before)


def test_install_from_a_zip(tmp_path):
    """A release archive: one top directory holding install.py and bin/."""
    archive = tmp_path / 'weewx-mqttreplicate.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(REPO / 'install.py', 'weewx-mqttreplicate/install.py')
        for path in sorted(PACKAGE_SRC.glob('*.py')):
            zf.write(path, 'weewx-mqttreplicate/bin/user/mqttreplicate/' + path.name)
        for path in sorted(SKIN_SRC.iterdir()):
            zf.write(path, 'weewx-mqttreplicate/skins/Replication/' + path.name)
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(archive), f'--config={conf}', '--yes', cwd=tmp_path)

    installed = conf.parent / 'bin' / 'user' / 'mqttreplicate'
    assert sorted(p.name for p in installed.glob('*.py')) == \
        sorted(p.name for p in PACKAGE_SRC.glob('*.py'))
    assert 'Replicator' in read_conf(conf)
    skin = conf.parent / 'skins' / 'Replication'
    assert (skin / 'skin.conf').read_bytes() == (SKIN_SRC / 'skin.conf').read_bytes()

    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)
    assert not installed.exists()
    assert not skin.exists()


def test_uninstall_keeps_what_the_user_added(tmp_path):
    """Uninstall deletes only what the installer declared."""
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    config = read_conf(conf)
    config['Replicator']['Responder']['workers'] = '2'
    config.write()

    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)

    config = read_conf(conf)
    assert config['Replicator'] == {'Responder': {'workers': '2'}}
    assert config['Station']['station_type'] == 'Simulator'


def test_uninstall_removes_exactly_what_install_wrote(tmp_path):
    conf = make_station(tmp_path)
    before = services_as_lists(read_conf(conf))
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    assert services_as_lists(read_conf(conf)) != before
    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)
    assert services_as_lists(read_conf(conf)) == before
    assert not (conf.parent / 'bin' / 'user' / 'mqttreplicate').exists()
    assert not (conf.parent / 'skins' / 'Replication').exists()


def test_uninstall_keeps_a_report_the_user_changed(tmp_path):
    """The user's own option in the report's section stays; the installer's go."""
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    config = read_conf(conf)
    config['StdReport']['Replication']['report_timing'] = '*/15 * * * *'
    config.write()
    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)
    assert read_conf(conf)['StdReport']['Replication'] == {'report_timing': '*/15 * * * *'}


# ---------------------------------------------------------------------------------------------
# A station of the earlier extension, whose stanza is [MQTTReplicate]
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('role', ['secondary', 'primary'])
def test_upgrade_keeps_the_earlier_stanza(tmp_path, role):
    conf = make_station(tmp_path)
    root = conf.parent
    installed = root / 'bin' / 'user' / 'mqttreplicate'
    give_earlier_stanza(conf, role)
    text_before = conf.read_text(encoding='utf-8')
    before = read_conf(conf)
    earlier = before['MQTTReplicate'].dict()
    assert earlier['Requester']['enable'] == ('true' if role == 'secondary' else 'false')

    # ---- install: no [Replicator]; the report is the only change -----------------------------
    out = weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    assert 'kept as it is, no [Replicator] stanza added' in out
    config = read_conf(conf)
    assert config['StdReport'].pop('Replication')['skin'] == 'Replication'
    assert config.dict() == before.dict()
    assert conf.read_text(encoding='utf-8') != text_before
    config = read_conf(conf)
    assert 'Replicator' not in config
    assert sorted(p.name for p in installed.glob('*.py')) == \
        sorted(p.name for p in PACKAGE_SRC.glob('*.py'))
    # The extension reads the stanza as it is.
    config_dict = read_config_dict(conf)
    assert cfg.stanza_name(config_dict) == 'MQTTReplicate'
    responder = cfg.parse_responder(config_dict)
    assert responder.connection.section == 'MQTTReplicate'
    assert responder.enable is (role == 'primary')
    assert cfg.parse_requester(config_dict).connection.section == 'MQTTReplicate'

    # ---- reconfigure: station_type names [MQTTReplicate], no [Replicator] added --------------
    expected = dict(earlier)
    expected['Requester'] = dict(earlier['Requester'], enable='true')
    for attempt in (1, 2):
        out = weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
                     f'--config={conf}', cwd=tmp_path)
        config = read_conf(conf)
        assert config['Station']['station_type'] == 'MQTTReplicate', (attempt, out)
        assert 'Replicator' not in config, (attempt, out)
        assert config['MQTTReplicate'].dict() == expected, attempt
        keys = list(config.keys())
        assert keys.index('MQTTReplicate') == keys.index('Station') + 1
        assert config['StdArchive']['record_generation'] == 'hardware'
        assert 'MQTTReplicate: this station keeps its [MQTTReplicate] stanza' in out
        process = as_list(config['Engine']['Services']['process_services'])
        assert not set(process) & set(REMOVED_SERVICES)
        if role == 'primary' and attempt == 1:
            assert 'MQTTReplicate: set [MQTTReplicate] [[Requester]] enable = true' in out
    # The stanza's comments are still there.
    text = conf.read_text(encoding='utf-8')
    assert '# The secondary role: a WeeWX driver' in text
    assert cfg.parse_requester(read_config_dict(conf)).connection.section == 'MQTTReplicate'

    # ---- uninstall: the package and the service go, [MQTTReplicate] stays -------------------
    weectl('extension', 'uninstall', 'MQTTReplicate', '--yes', f'--config={conf}', cwd=tmp_path)
    config = read_conf(conf)
    assert config['MQTTReplicate'].dict() == expected
    assert 'Replicator' not in config
    assert SERVICE not in as_list(config['Engine']['Services']['restful_services'])
    assert not installed.exists()
    assert config['Station']['station_type'] == 'MQTTReplicate'


def test_both_stanzas_are_refused_naming_both(tmp_path):
    conf = make_station(tmp_path)
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    give_earlier_stanza(conf, 'primary')
    config_dict = read_config_dict(conf)
    for parse in (cfg.parse_requester, cfg.parse_responder):
        with pytest.raises(cfg.ConfigError) as info:
            parse(config_dict)
        assert '[Replicator]' in str(info.value) and '[MQTTReplicate]' in str(info.value)

    # The command line says so, with exit status 2.
    proc = subprocess.run([sys.executable, '-m', 'user.mqttreplicate', '--config', str(conf),
                           'status'], capture_output=True, text=True, timeout=60,
                          cwd=conf.parent / 'bin', env=dict(os.environ, PYTHONPATH=''))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert '[Replicator]' in last and '[MQTTReplicate]' in last, proc.stderr

    # Installing again and reconfiguring warn, and change neither stanza.
    earlier = read_conf(conf)['MQTTReplicate'].dict()
    out = weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    assert 'Warning: weewx.conf has both [Replicator] and [MQTTReplicate]' in out
    out = weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
                 f'--config={conf}', cwd=tmp_path)
    assert 'warning: weewx.conf has both [Replicator] and [MQTTReplicate]' in out
    config = read_conf(conf)
    assert config['MQTTReplicate'].dict() == earlier
    assert config['Station']['station_type'] == 'Replicator'


def test_reconfigure_prompts_with_the_earlier_stanza_and_answers_into_it(tmp_path,
                                                                        monkeypatch, capsys):
    """weectl's own config_driver, prompting.  weectl asks with the default stanza's values
    and merges the answers into the [Replicator] it inserted; the editor moves what was
    changed into [MQTTReplicate], and an answer left at its default keeps that stanza's
    value."""
    from weectllib import station_actions

    conf = make_station(tmp_path)
    give_earlier_stanza(conf, 'primary', host='old.lan', port=1884)
    config_dict = read_conf(conf)
    prompts = []
    answers = iter(['new.lan', ''])

    def answer(prompt=''):
        prompts.append(prompt)
        return next(answers)
    monkeypatch.setattr('builtins.input', answer)

    station_actions.config_driver(config_dict, driver='user.mqttreplicate', no_prompt=False)

    assert prompts == ['host [localhost]: ', 'port [1883]: ']
    assert 'Replicator' not in config_dict
    assert config_dict['Station']['station_type'] == 'MQTTReplicate'
    assert config_dict['MQTTReplicate']['host'] == 'new.lan'
    assert config_dict['MQTTReplicate']['port'] == '1884'
    assert config_dict['MQTTReplicate']['Requester']['enable'] == 'true'
    assert 'MQTTReplicate: set host = new.lan in [MQTTReplicate]' in capsys.readouterr().out


def test_confeditor_moves_changed_requester_answers_into_the_earlier_stanza(capsys):
    """As above, for an answer weectl merged into [[Requester]]."""
    editor = load_confeditor().confeditor_loader()
    config = configobj.ConfigObj(interpolation=False)
    config['Station'] = {'station_type': 'Simulator'}
    config['MQTTReplicate'] = {'Requester': {'host': 'old.lan', 'enable': 'true'}}
    text = editor.get_conf(None)                      # weectl: the station has no [Replicator]
    stanza = configobj.ConfigObj(text.splitlines(), interpolation=False)['Replicator']
    config['Replicator'] = stanza
    config['Replicator'].merge({'Requester': {'host': 'primary.lan'}, 'port': '1883'})
    editor.modify_config(config)
    assert config['MQTTReplicate'] == {'Requester': {'host': 'primary.lan', 'enable': 'true'},
                                       'driver': 'user.mqttreplicate'}
    assert config['Station']['station_type'] == 'MQTTReplicate'
    assert 'MQTTReplicate: set [[Requester]] host = primary.lan in [MQTTReplicate]' in \
        capsys.readouterr().out


def test_confeditor_leaves_both_stanzas_alone_when_replicator_was_there():
    """[Replicator] given to get_conf (it was in weewx.conf): nothing is removed."""
    editor = load_confeditor().confeditor_loader()
    config = configobj.ConfigObj(interpolation=False)
    config['Station'] = {'station_type': 'Replicator'}
    config['Replicator'] = {'driver': 'user.mqttreplicate'}
    config['MQTTReplicate'] = {'host': 'x'}
    editor.get_conf('[Replicator]\n    driver = user.mqttreplicate')
    editor.modify_config(config)
    assert 'Replicator' in config and config['MQTTReplicate'] == {'host': 'x'}
    assert config['Station']['station_type'] == 'Replicator'


def test_reconfigure_prompts_on_a_fresh_station(tmp_path, monkeypatch):
    from weectllib import station_actions

    conf = make_station(tmp_path)
    weectl('extension', 'install', str(REPO), f'--config={conf}', '--yes', cwd=tmp_path)
    config_dict = read_conf(conf)
    answers = iter(['broker.lan', ''])
    monkeypatch.setattr('builtins.input', lambda prompt='': next(answers))
    station_actions.config_driver(config_dict, driver='user.mqttreplicate', no_prompt=False)
    assert 'MQTTReplicate' not in config_dict
    assert config_dict['Station']['station_type'] == 'Replicator'
    assert (config_dict['Replicator']['host'], config_dict['Replicator']['port']) == \
        ('broker.lan', '1883')


@pytest.mark.e2e
def test_upgraded_secondary_replicates_under_weewxd(stations, broker):
    """A secondary of the earlier extension, upgraded with weectl and no edit, runs under a
    real weewxd with its [MQTTReplicate] stanza and catches up with a primary."""
    replicate_under_weewxd(stations, broker, earlier=True)


def replicate_under_weewxd(stations, broker, earlier=False, install_from=REPO, count=1500):
    """A primary answering from the command line; a secondary made with weectl station
    create (no link to this repository's package), the extension installed from
    install_from, made a secondary with weectl station reconfigure, run by weewxd until
    it has caught up.  Returns the secondary."""
    from tests.support.station import compare_databases, seed_history

    primary = stations('primary')
    seed_history(primary, 1700000000 - 1700000000 % 86400, count)

    def primary_stanza(config):
        config['Replicator'] = {
            'host': broker.host, 'port': str(broker.port), 'max_delay': '2',
            'status_heartbeat': TEST_HEARTBEAT,
            'Responder': {'enable': 'true', 'weewx': {'wx_binding': {'type': 'main'}}}}
    primary.edit(primary_stanza)

    secondary = stations('secondary', link_package=False)
    conf = secondary.config_path
    if earlier:
        give_earlier_stanza(conf, 'secondary', host=broker.host, port=broker.port)
    weectl('extension', 'install', str(install_from), f'--config={conf}', '--yes',
           cwd=secondary.root)
    installed = secondary.root / 'bin' / 'user' / 'mqttreplicate'
    assert installed.is_dir() and not installed.is_symlink()
    weectl('station', 'reconfigure', '--driver=user.mqttreplicate', '--no-prompt',
           f'--config={conf}', cwd=secondary.root)
    name = 'MQTTReplicate' if earlier else 'Replicator'
    other = 'Replicator' if earlier else 'MQTTReplicate'

    def point_at_broker(config):
        assert config['Station']['station_type'] == name
        assert other not in config
        config[name]['host'] = broker.host
        config[name]['port'] = str(broker.port)
        config[name]['max_delay'] = '2'
        config[name]['status_heartbeat'] = TEST_HEARTBEAT
    secondary.edit(point_at_broker)

    responder = primary.start_cli('respond')
    responder.wait_for_output(r'responding for weewx/wx_binding', timeout=30)
    weewxd = secondary.start_weewxd('-x')
    weewxd.wait_for_log(r'driver: weewx/wx_binding caught up at \d+ \(\d+ records\)',
                        timeout=90)
    weewxd.wait_for_log(r'Starting main packet loop', timeout=30)
    weewxd.stop()
    responder.stop()
    assert secondary.count_records() == count
    diffs = compare_databases(primary, 'wx_binding', secondary, 'wx_binding')
    assert diffs == [], '\n'.join(diffs)
    log = secondary.log_text()
    assert 'Traceback' not in log and ' ERROR ' not in log, log[-4000:]
    return secondary


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
    config['Replicator'] = {'Requester': {'enable': 'false'}}

    editor.modify_config(config)

    assert config['StdArchive']['record_generation'] == 'hardware'
    assert as_list(config['Engine']['Services']['process_services']) == \
        ['weewx.engine.StdConvert', 'user.other.Service']
    assert config['Replicator']['Requester']['enable'] == 'true'
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        'MQTTReplicate: set [StdArchive] record_generation = hardware (was software)',
        'MQTTReplicate: removed weewx.engine.StdCalibrate from process_services',
        'MQTTReplicate: removed weewx.engine.StdQC from process_services',
        'MQTTReplicate: removed weewx.wxservices.StdWXCalculate from process_services',
        'MQTTReplicate: set [Replicator] [[Requester]] enable = true',
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
    section = stanza['Replicator']
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
