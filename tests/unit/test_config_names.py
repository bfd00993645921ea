"""The names in the stanza that nobody reads, and the bindings it names: a misspelt option is
warned about (section, option, nearest known name), a binding that does not exist or is not
where the engine stores records is a ConfigError naming option and section."""

import logging
import textwrap

import configobj
import pytest

from user.mqttreplicate import config as cfg
from user.mqttreplicate.config import ConfigError

WEEWX = '''
[StdArchive]
    data_binding = wx_binding
[DataBindings]
    [[wx_binding]]
        database = archive_sqlite
    [[aq_binding]]
        database = aq_sqlite
'''


def conf(text, weewx=WEEWX):
    lines = (textwrap.dedent(text).strip() + '\n' + textwrap.dedent(weewx)).splitlines()
    return configobj.ConfigObj(lines)


SECONDARY = '''
[Replicator]
    driver = user.mqttreplicate
    host = localhost
    %s
    [[Requester]]
        %s
        [[[weewx]]]
            %s
            [[[[wx_binding]]]]
                type = main
                %s
'''


def secondary(top='', role='', instance='', binding=''):
    return conf(SECONDARY % (top, role, instance, binding))


def test_a_correct_stanza_has_no_unknown_names():
    assert cfg.misnamed(secondary()) == []
    text = '''
    [Replicator]
        host = broker
        port = 1884
        page_size = 100
        [[tls]]
            ca_certs = /x
        [[Requester]]
            enable = true
            startup_max_tries = 3
            direct_update = true
            [[[tls]]]
                certs_required = none
            [[[weewx]]]
                [[[[wx_binding]]]]
                    type = main
                    secondary_data_binding = wx_binding
                    initialize = false
        [[Responder]]
            enable = true
            workers = 2
            [[[weewx]]]
                [[[[wx_binding]]]]
                    type = main
    '''
    assert cfg.misnamed(conf(text)) == []


@pytest.mark.parametrize('where, line, expected', [
    ('role', 'prot = 18830',
     "option 'prot' in section [Replicator][Requester] is unknown and ignored "
     "(did you mean 'port'?)"),
    ('top', 'hots = broker',
     "option 'hots' in section [Replicator] is unknown and ignored (did you mean 'host'?)"),
    ('binding', 'secondary_databinding = wx_binding',
     "option 'secondary_databinding' in section [Replicator][Requester][weewx][wx_binding] "
     "is unknown and ignored (did you mean 'secondary_data_binding'?)"),
    ('role', 'frobnicate = 1',
     "option 'frobnicate' in section [Replicator][Requester] is unknown and ignored"),
])
def test_a_misspelt_option_is_named_with_its_section_and_nearest_name(where, line, expected):
    config = secondary(**{where: line})
    assert cfg.misnamed(config) == [expected]


def test_responder_options_and_tls():
    text = '''
    [Replicator]
        [[Responder]]
            enabel = true
            [[[tls]]]
                ca_cert = /x
            [[[weewx]]]
                [[[[wx_binding]]]]
                    tpye = main
    '''
    assert cfg.misnamed(conf(text)) == [
        "option 'enabel' in section [Replicator][Responder] is unknown and ignored "
        "(did you mean 'enable'?)",
        "option 'ca_cert' in section [Replicator][Responder][tls] is unknown and ignored "
        "(did you mean 'ca_certs'?)",
        "option 'tpye' in section [Replicator][Responder][weewx][wx_binding] is unknown and "
        "ignored (did you mean 'type'?)"]


def test_an_option_of_the_other_role_is_unknown_in_a_role_section():
    found = cfg.misnamed(secondary(role='workers = 2'))
    assert found == ["option 'workers' in section [Replicator][Requester] is unknown and "
                     "ignored"]


def test_a_value_where_a_section_belongs():
    text = '''
    [Replicator]
        Requester = weewx
        tls = true
        [[Responder]]
            [[[weewx]]]
                wx_binding = main
    '''
    assert cfg.misnamed(conf(text)) == [
        "option 'Requester' in section [Replicator] is ignored: 'Requester' must be a section",
        "option 'tls' in section [Replicator] is ignored: 'tls' must be a section",
        "option 'wx_binding' in section [Replicator][Responder][weewx] is ignored: an "
        "instance section holds binding sections ([[[[binding]]]]), not options"]


def test_a_section_where_a_value_belongs():
    text = '''
    [Replicator]
        [[port]]
        [[Requestor]]
        [[Requester]]
            [[[host]]]
            [[[weewx]]]
                [[[[wx_binding]]]]
                    [[[[[type]]]]]
    '''
    assert cfg.misnamed(conf(text)) == [
        "section [Replicator][port] is ignored: 'port' is an option, to be given as "
        "port = value in [Replicator]",
        "section [Replicator][Requestor] is ignored: [Replicator] has no section "
        "'Requestor' (did you mean 'Requester'?)",
        "section [Replicator][Requester][host] is ignored: 'host' is an option, to be given "
        "as host = value in [Replicator][Requester]",
        "section [Replicator][Requester][weewx][wx_binding][type] is ignored: 'type' is an "
        "option, to be given as type = value in [Replicator][Requester][weewx][wx_binding]"]


def test_the_earlier_stanza_is_checked_under_its_own_name():
    config = conf((SECONDARY % ('', 'prot = 1', '', '')).replace('[Replicator]',
                                                                  '[MQTTReplicate]'))
    assert cfg.misnamed(config) == [
        "option 'prot' in section [MQTTReplicate][Requester] is unknown and ignored "
        "(did you mean 'port'?)"]


def test_warned_once_per_process_at_parse(caplog, monkeypatch):
    monkeypatch.setattr(cfg, '_warned', set())
    config = secondary(role='prot = 18830')
    with caplog.at_level(logging.WARNING, logger='user.mqttreplicate.config'):
        options = cfg.parse_requester(config)
        cfg.parse_requester(config)
        cfg.parse_responder(conf(SECONDARY % ('', 'prot = 18830', '', '') + '''
            [[Responder]]
                enable = false'''))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["config: option 'prot' in section [Replicator][Requester] is unknown "
                        "and ignored (did you mean 'port'?)"]
    assert options.connection.port == 1883       # what the misspelling leads to


# --- bindings ------------------------------------------------------------------------------------

def test_an_unknown_secondary_data_binding_names_option_and_section():
    config = secondary(binding='secondary_data_binding = wx_bindng')
    with pytest.raises(ConfigError) as info:
        cfg.parse_requester(config)
    assert str(info.value) == (
        "option 'secondary_data_binding' in section [Replicator][Requester][weewx][wx_binding]: "
        "there is no data binding 'wx_bindng' in [DataBindings] (did you mean 'wx_binding'?)")


def test_a_binding_section_without_secondary_data_binding_names_its_section():
    text = (SECONDARY % ('', '', '', '')).replace('[[[[wx_binding]]]]', '[[[[wx_bindng]]]]')
    with pytest.raises(ConfigError) as info:
        cfg.parse_requester(conf(text))
    assert str(info.value) == (
        "section [Replicator][Requester][weewx][wx_bindng] (without secondary_data_binding, "
        "its name): there is no data binding 'wx_bindng' in [DataBindings] (did you mean "
        "'wx_binding'?)")


def test_an_enabled_responder_names_the_binding_section_it_cannot_serve():
    text = '''
    [Replicator]
        [[Responder]]
            enable = true
            [[[weewx]]]
                [[[[wx_bindng]]]]
                    type = main
    '''
    with pytest.raises(ConfigError) as info:
        cfg.parse_responder(conf(text))
    assert str(info.value) == (
        "section [Replicator][Responder][weewx][wx_bindng] (the name of the binding served): "
        "there is no data binding 'wx_bindng' in [DataBindings] (did you mean 'wx_binding'?)")
    # a disabled responder (every station has one from the installer) is not checked
    cfg.parse_responder(conf(text.replace('enable = true', 'enable = false')))


def test_the_main_binding_must_be_where_the_engine_stores_records():
    config = secondary(binding='secondary_data_binding = aq_binding')
    with pytest.raises(ConfigError) as info:
        cfg.parse_requester(config)
    assert str(info.value) == (
        "option 'secondary_data_binding' in section [Replicator][Requester][weewx][wx_binding]: "
        "the binding of type = main is stored by the engine, in [StdArchive] data_binding = "
        "wx_binding, but it names 'aq_binding'; make them the same (or give this binding "
        "type = secondary)")
    # a secondary binding may go anywhere
    text = SECONDARY % ('', '', '', 'secondary_data_binding = aq_binding')
    options = cfg.parse_requester(conf(text.replace('type = main', 'type = secondary')))
    assert options.bindings[0].secondary_data_binding == 'aq_binding'


def test_stdarchive_data_binding_defaults_to_wx_binding():
    weewx = WEEWX.replace('data_binding = wx_binding', 'archive_interval = 300')
    assert cfg.parse_requester(conf(SECONDARY % ('', '', '', ''), weewx)).main_binding
    with pytest.raises(ConfigError):
        cfg.parse_requester(conf(SECONDARY % ('', '', '', 'secondary_data_binding = '
                                                          'aq_binding'), weewx))


def test_the_stanzas_the_extension_writes_have_only_known_names():
    """What `weectl extension install` and `weectl station reconfigure` write."""
    import importlib.util
    from pathlib import Path
    from user.mqttreplicate import confeditor
    spec = importlib.util.spec_from_file_location(
        'mqttreplicate_install', Path(__file__).resolve().parents[2] / 'install.py')
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    assert cfg.misnamed(install.make_config()) == []
    editor = confeditor.MQTTReplicateConfEditor()
    stanza = configobj.ConfigObj(editor.default_stanza.splitlines())
    assert cfg.misnamed(stanza) == []


def test_every_name_the_parsers_read_is_a_known_name():
    """An option added to the parsing but not to the lists would be warned about as
    unknown."""
    import re
    from pathlib import Path
    source = Path(cfg.__file__).read_text(encoding='utf-8')
    read = set(re.findall(r"\.(?:string|integer|real|boolean|choice|topic|raw)\(\s*'(\w+)'",
                          source))
    assert len(read) > 40
    known = set(cfg.STANZA_NAMES) | set(cfg.TLS_OPTIONS) | set(cfg.BINDING_OPTIONS) \
        | set(cfg.HOMEASSISTANT_OPTIONS)
    assert read - known == set()
