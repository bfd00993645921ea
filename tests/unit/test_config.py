"""Unit tests of user.mqttreplicate.config: the [Replicator] stanza parsed into dataclasses.

No broker, no network, no WeeWX station: every test builds a configobj.ConfigObj in memory.
"""

import dataclasses
import logging
import ssl
import textwrap

import configobj
import pytest

from user.mqttreplicate import config as cfg
from user.mqttreplicate.config import ConfigError

REQ = '[Replicator][Requester]'
RESP = '[Replicator][Responder]'
CONFIG_LOGGER = 'user.mqttreplicate.config'


def conf(text, **top):
    """A ConfigObj from an indented weewx.conf fragment, plus top-level options."""
    config = configobj.ConfigObj(textwrap.dedent(text).strip().splitlines())
    for key, value in top.items():
        config[key] = value
    return config


def requester_conf(options='', top='', instance='weewx', binding='wx_binding', extra='',
                   **root):
    """[Replicator] with a requester of one main binding; options go into [[Requester]]."""
    return conf('''
        [Replicator]
            driver = user.mqttreplicate
        %s
            [[Requester]]
        %s
                [[[%s]]]
                    [[[[%s]]]]
                        type = main
        %s
        ''' % (_indent(top, 4), _indent(options, 8), instance, binding, _indent(extra, 8)),
                **root)


def responder_conf(options='', top='', enable='true', **root):
    return conf('''
        [Replicator]
        %s
            [[Responder]]
                enable = %s
        %s
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''' % (_indent(top, 4), enable, _indent(options, 8)), **root)


def _indent(text, n):
    """Indent a fragment for readability of failures; configobj itself ignores indentation."""
    text = textwrap.dedent(text).strip()
    return textwrap.indent(text, ' ' * n) if text else ''


def error_of(parse, config):
    with pytest.raises(ConfigError) as info:
        parse(config)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
#  Defaults
# ---------------------------------------------------------------------------------------------

def _field_defaults(cls, skip=()):
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING and f.name not in skip}


def test_requester_defaults_match_every_dataclass_default():
    options = cfg.parse_requester(requester_conf())
    for name, default in _field_defaults(cfg.RequesterOptions).items():
        assert getattr(options, name) == default, name
    for name, default in _field_defaults(cfg.ConnectionOptions).items():
        assert getattr(options.connection, name) == default, name
    assert options.connection.role == 'requester'


def test_responder_defaults_match_every_dataclass_default():
    options = cfg.parse_responder(responder_conf(enable='false'))
    for name, default in _field_defaults(cfg.ResponderOptions).items():
        assert getattr(options, name) == default, name
    for name, default in _field_defaults(cfg.ConnectionOptions).items():
        assert getattr(options.connection, name) == default, name
    assert options.connection.role == 'responder'


def test_documented_default_values():
    """The defaults the spec and the old extension promise, spelled out."""
    req = cfg.parse_requester(requester_conf())
    c = req.connection
    assert (c.host, c.port, c.keepalive) == ('localhost', 1883, 60)
    assert c.username is None and c.password is None and c.shared_secret is None
    assert c.log_mqtt is False
    assert (c.subscribe_qos, c.publish_qos) == (1, 1)
    assert c.request_topic == 'replicate/request'
    assert c.response_topic == 'replicate/response'
    assert c.archive_topic == 'replicate/archive'
    assert c.status_topic == 'replicate/status'
    assert c.session_expiry_interval == 86400          # 1 day
    assert (c.min_delay, c.max_delay) == (1, 120)
    assert c.compress is True
    assert c.max_message_bytes == 256 * 1024
    assert c.bind_address == ''
    assert c.tls == cfg.TLSOptions()
    assert c.tls.enable is False and c.tls.certs_required == ssl.CERT_REQUIRED
    assert req.loop_interval == 2.5
    assert req.archive_interval == 300
    assert req.catchup == 'direct'
    assert req.page_size == 5000
    assert req.page_timeout == 60.0
    assert req.startup_max_tries == 2
    assert req.startup_wait_before_retry == 10.0
    assert req.log_msg_count == 0
    assert req.verify_days == 7

    resp = cfg.parse_responder(responder_conf(enable='false'))
    assert resp.enable is False
    assert resp.delta == 60
    assert resp.batch_size == 1000
    assert resp.page_size == 10000
    assert resp.workers == 1


def test_binding_defaults():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
                    [[[[extra_binding]]]]
        ''')
    options = cfg.parse_requester(config)
    extra = [b for b in options.bindings if b.name == 'extra_binding'][0]
    assert extra.type == 'secondary'
    assert not extra.is_main
    assert extra.secondary_data_binding == 'extra_binding'    # stored under its own name
    assert extra.initialize is True
    assert extra.key == 'weewx/extra_binding'
    assert extra.instance == 'weewx'
    assert options.main_binding.name == 'wx_binding'
    assert options.instances == ['weewx']


def test_responder_enable_defaults_to_false():
    config = conf('''
        [Replicator]
            [[Responder]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''')
    assert cfg.parse_responder(config).enable is False


def test_responder_disabled_without_bindings_is_fine():
    config = conf('''
        [Replicator]
            [[Responder]]
                enable = false
        ''')
    options = cfg.parse_responder(config)
    assert options.enable is False
    assert options.bindings == ()


def test_responder_enabled_without_bindings_is_refused():
    config = conf('''
        [Replicator]
            [[Responder]]
                enable = true
        ''')
    message = error_of(cfg.parse_responder, config)
    assert RESP in message


def test_requester_without_bindings_is_refused():
    config = conf('''
        [Replicator]
            [[Requester]]
                host = broker
        ''')
    assert REQ in error_of(cfg.parse_requester, config)


def test_secondary_data_binding_and_initialize_are_read():
    options = cfg.parse_requester(requester_conf(extra='''
        [[[[other]]]]
            secondary_data_binding = local_other
            initialize = false
        '''))
    # extra is inside the [[[weewx]]] instance (indentation of the template)
    other = [b for b in options.bindings if b.name == 'other'][0]
    assert other.secondary_data_binding == 'local_other'
    assert other.initialize is False


# ---------------------------------------------------------------------------------------------
#  Inheritance from [Replicator]
# ---------------------------------------------------------------------------------------------

def both_roles(top='', requester='', responder=''):
    return conf('''
        [Replicator]
        %s
            [[Requester]]
        %s
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
            [[Responder]]
                enable = true
        %s
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''' % (_indent(top, 4), _indent(requester, 8), _indent(responder, 8)))


def test_connection_options_are_inherited_by_both_roles():
    config = both_roles(top='''
        host = broker.example.org
        port = 8883
        keepalive = 30
        username = wx
        password = s3cret
        log_mqtt = true
        subscribe_qos = 2
        publish_qos = 0
        request_topic = wx/req
        response_topic = wx/resp
        archive_topic = wx/arch
        status_topic = wx/status
        session_expiry_interval = 3600
        min_delay = 2
        max_delay = 30
        compress = false
        max_message_bytes = 65536
        bind_address = 127.0.0.1
        ''')
    for options in (cfg.parse_requester(config), cfg.parse_responder(config)):
        c = options.connection
        assert c.host == 'broker.example.org'
        assert c.port == 8883
        assert c.keepalive == 30
        assert c.username == 'wx'
        assert c.password == 's3cret'
        assert c.log_mqtt is True
        assert c.subscribe_qos == 2
        assert c.publish_qos == 0
        assert c.request_topic == 'wx/req'
        assert c.response_topic == 'wx/resp'
        assert c.archive_topic == 'wx/arch'
        assert c.status_topic == 'wx/status'
        assert c.session_expiry_interval == 3600
        assert c.min_delay == 2
        assert c.max_delay == 30
        assert c.compress is False
        assert c.max_message_bytes == 65536
        assert c.bind_address == '127.0.0.1'


def test_role_section_overrides_inherited_options():
    config = both_roles(top='''
            host = shared-host
            port = 1883
            username = shared
        ''', requester='''
            port = 1884
            username = secondary
        ''', responder='''
            host = local-broker
        ''')
    req = cfg.parse_requester(config).connection
    resp = cfg.parse_responder(config).connection
    assert (req.host, req.port, req.username) == ('shared-host', 1884, 'secondary')
    assert (resp.host, resp.port, resp.username) == ('local-broker', 1883, 'shared')


def test_role_options_are_also_inherited():
    """Role options (not only connection options) may be set once in [Replicator]."""
    config = both_roles(top='page_size = 77')
    assert cfg.parse_requester(config).page_size == 77
    assert cfg.parse_responder(config).page_size == 77


def test_tls_section_in_top_level_is_inherited(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('dummy')
    config = conf('''
        [Replicator]
            [[tls]]
                ca_certs = %s
            [[Requester]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
            [[Responder]]
                enable = true
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''' % ca)
    for options in (cfg.parse_requester(config), cfg.parse_responder(config)):
        assert options.connection.tls.enable is True
        assert options.connection.tls.ca_certs == str(ca)


def test_role_tls_section_replaces_top_level_tls(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('dummy')
    config = conf('''
        [Replicator]
            [[tls]]
                ca_certs = %s
                certs_required = none
            [[Requester]]
                [[[tls]]]
                    enable = false
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''' % ca)
    assert cfg.parse_requester(config).connection.tls.enable is False


# ---------------------------------------------------------------------------------------------
#  Bad values: ConfigError naming option and section
# ---------------------------------------------------------------------------------------------

def test_bad_integer_names_option_and_section():
    message = error_of(cfg.parse_requester, requester_conf('port = abc'))
    assert message == "option 'port' in section %s: 'abc' is not an integer" % REQ


def test_bad_integer_in_responder_names_responder_section():
    message = error_of(cfg.parse_responder, responder_conf('batch_size = lots'))
    assert "'batch_size'" in message
    assert RESP in message


def test_bad_real_names_option_and_section():
    message = error_of(cfg.parse_requester, requester_conf('loop_interval = soon'))
    assert "'loop_interval'" in message and REQ in message and 'soon' in message


@pytest.mark.parametrize('option, value, fragment', [
    ('port', '0', 'less than 1'),
    ('port', '65536', 'more than 65535'),
    ('subscribe_qos', '3', 'more than 2'),
    ('publish_qos', '3', 'more than 2'),
    ('publish_qos', '-1', 'less than 0'),
    ('keepalive', '1', 'less than 5'),
    ('max_message_bytes', '1000', 'less than 4096'),
    ('session_expiry_interval', '-1', 'less than 0'),
    ('min_delay', '0', 'less than 1'),
    ('page_size', '0', 'less than 1'),
    ('archive_interval', '10', 'less than 60'),
    ('loop_interval', '0', 'less than 0.1'),
    ('startup_max_tries', '0', 'less than 1'),
    ('verify_days', '-1', 'less than 0'),
])
def test_requester_ranges(option, value, fragment):
    message = error_of(cfg.parse_requester, requester_conf('%s = %s' % (option, value)))
    assert "'%s'" % option in message
    assert REQ in message
    assert fragment in message


@pytest.mark.parametrize('option, value', [
    ('workers', '0'), ('workers', '17'), ('max_responder_threads', '0'),
    ('batch_size', '0'), ('page_size', '0'), ('delta', '-5'),
])
def test_responder_ranges(option, value):
    message = error_of(cfg.parse_responder, responder_conf('%s = %s' % (option, value)))
    assert "'%s'" % option in message and RESP in message


def test_range_edges_are_accepted():
    options = cfg.parse_requester(requester_conf('''
        port = 65535
        subscribe_qos = 0
        publish_qos = 2
        session_expiry_interval = 0
        max_message_bytes = 4096
        '''))
    c = options.connection
    assert (c.port, c.subscribe_qos, c.publish_qos) == (65535, 0, 2)
    assert c.session_expiry_interval == 0
    assert c.max_message_bytes == 4096


def test_float_for_integer_option_is_refused():
    message = error_of(cfg.parse_requester, requester_conf('port = 1883.5'))
    assert "'port'" in message and 'not an integer' in message


@pytest.mark.parametrize('text, expected', [
    ('yes', True), ('no', False), ('true', True), ('false', False), ('True', True),
    ('FALSE', False), ('on', True), ('off', False), ('1', True), ('0', False),
])
def test_booleans(text, expected):
    options = cfg.parse_requester(requester_conf('compress = %s\nlog_mqtt = %s' % (text, text)))
    assert options.connection.compress is expected
    assert options.connection.log_mqtt is expected


@pytest.mark.parametrize('text', ['maybe', 'yess', '2', 'enabled'])
def test_boolean_garbage_is_refused(text):
    message = error_of(cfg.parse_requester, requester_conf('compress = %s' % text))
    assert message == "option 'compress' in section %s: '%s' is not true or false" % (REQ, text)


def test_boolean_garbage_in_responder_enable():
    message = error_of(cfg.parse_responder, responder_conf(enable='perhaps'))
    assert "'enable'" in message and RESP in message


@pytest.mark.parametrize('text, expected', [
    ('direct', 'direct'), ('engine', 'engine'), ('Engine', 'engine'), ('DIRECT', 'direct'),
])
def test_catchup_choices(text, expected):
    assert cfg.parse_requester(requester_conf('catchup = %s' % text)).catchup == expected


@pytest.mark.parametrize('text', ['fast', 'bulk', 'engines'])
def test_catchup_bad_choice(text):
    message = error_of(cfg.parse_requester, requester_conf('catchup = %s' % text))
    assert "'catchup'" in message and REQ in message
    assert 'direct' in message and 'engine' in message


@pytest.mark.parametrize('text, expected', [('auto', 'auto'), ('json', 'json'), ('JSON', 'json')])
def test_live_format_choices(text, expected):
    options = cfg.parse_responder(responder_conf('live_format = %s' % text))
    assert options.live_format == expected


def test_live_format_bad_choice():
    message = error_of(cfg.parse_responder, responder_conf('live_format = compact'))
    assert message == ("option 'live_format' in section %s: 'compact' is not one of auto, json"
                       % RESP)


def test_type_choices():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[a]]]]
                        type = MAIN
                    [[[[b]]]]
                        type = secondary
        ''')
    types = {b.name: b.type for b in cfg.parse_requester(config).bindings}
    assert types == {'a': 'main', 'b': 'secondary'}


def test_bad_type_names_binding_section():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = primary
        ''')
    message = error_of(cfg.parse_requester, config)
    assert message.startswith("option 'type' in section [Replicator][Requester][weewx]"
                              "[wx_binding]")
    assert 'primary' in message


def test_bad_initialize_names_binding_section():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
                        initialize = sometimes
        ''')
    message = error_of(cfg.parse_requester, config)
    assert "'initialize'" in message
    assert '[Replicator][Requester][weewx][wx_binding]' in message


@pytest.mark.parametrize('parse', [cfg.parse_requester, cfg.parse_responder])
def test_more_than_one_main_binding_is_refused(parse):
    role = 'Requester' if parse is cfg.parse_requester else 'Responder'
    config = conf('''
        [Replicator]
            [[%s]]
                enable = true
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
                [[[other]]]
                    [[[[other_binding]]]]
                        type = main
        ''' % role)
    message = error_of(parse, config)
    assert '[Replicator][%s]' % role in message
    assert 'main' in message
    assert 'weewx/wx_binding' in message and 'other/other_binding' in message


def test_no_main_binding_is_allowed():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[extra]]]]
        ''')
    options = cfg.parse_requester(config)
    assert options.main_binding is None


def test_missing_top_section():
    config = configobj.ConfigObj({'Station': {'station_type': 'Simulator'}})
    for parse in (cfg.parse_requester, cfg.parse_responder):
        assert error_of(parse, config) == 'section [Replicator] is missing'


def test_missing_role_section():
    config = conf('''
        [Replicator]
            host = localhost
        ''')
    assert error_of(cfg.parse_requester, config) == \
        'section [Replicator][Requester] is missing'
    assert error_of(cfg.parse_responder, config) == \
        'section [Replicator][Responder] is missing'


def test_has_role():
    config = both_roles()
    assert cfg.has_role(config, 'Requester') and cfg.has_role(config, 'Responder')
    assert not cfg.has_role(conf('[Replicator]\n    host = x'), 'Requester')
    assert not cfg.has_role(configobj.ConfigObj(), 'Requester')
    assert not cfg.has_role(None, 'Requester')


def test_role_given_as_scalar_is_a_config_error():
    config = configobj.ConfigObj({'Replicator': {'Requester': 'yes'}})
    with pytest.raises(ConfigError):
        cfg.parse_requester(config)


# ---------------------------------------------------------------------------------------------
#  TLS
# ---------------------------------------------------------------------------------------------

def _requester_with_tls(tls_options):
    return conf('''
        [Replicator]
            [[Requester]]
                [[[tls]]]
        %s
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
        ''' % _indent(tls_options, 12))


def test_tls_is_reserved_not_an_instance(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('dummy')
    options = cfg.parse_requester(_requester_with_tls('ca_certs = %s' % ca))
    assert options.instances == ['weewx']
    assert [b.key for b in options.bindings] == ['weewx/wx_binding']
    assert options.connection.tls.enable is True        # a [[[tls]]] section turns TLS on
    assert options.connection.tls.ca_certs == str(ca)


def test_tls_section_alone_is_no_instance():
    config = conf('''
        [Replicator]
            [[Requester]]
                [[[tls]]]
                    enable = false
                    [[[[wx_binding]]]]
                        type = main
        ''')
    message = error_of(cfg.parse_requester, config)
    assert 'names no instance' in message


@pytest.mark.parametrize('option, value, expected', [
    ('certs_required', 'none', ssl.CERT_NONE),
    ('certs_required', 'optional', ssl.CERT_OPTIONAL),
    ('certs_required', 'required', ssl.CERT_REQUIRED),
    ('certs_required', 'REQUIRED', ssl.CERT_REQUIRED),
    ('cert_reqs', 'none', ssl.CERT_NONE),
    ('cert_reqs', 'optional', ssl.CERT_OPTIONAL),
    ('cert_reqs', 'CERT_NONE', ssl.CERT_NONE),
    ('certs_required', 'cert_optional', ssl.CERT_OPTIONAL),
])
def test_certs_required_values_and_cert_reqs_alias(option, value, expected):
    options = cfg.parse_requester(_requester_with_tls('%s = %s' % (option, value)))
    assert options.connection.tls.certs_required == expected


def test_certs_required_wins_over_alias():
    options = cfg.parse_requester(_requester_with_tls('''
        certs_required = optional
        cert_reqs = none
        '''))
    assert options.connection.tls.certs_required == ssl.CERT_OPTIONAL


@pytest.mark.parametrize('option', ['certs_required', 'cert_reqs'])
def test_bad_certs_required(option):
    message = error_of(cfg.parse_requester, _requester_with_tls('%s = sometimes' % option))
    assert '[Replicator][Requester][tls]' in message
    assert 'sometimes' in message
    assert 'none, optional, required' in message


def test_missing_ca_file_is_refused(tmp_path):
    missing = tmp_path / 'nowhere' / 'ca.pem'
    message = error_of(cfg.parse_requester, _requester_with_tls('ca_certs = %s' % missing))
    assert message == "option 'ca_certs' in section [Replicator][Requester][tls]: " \
                      "file '%s' does not exist" % missing


@pytest.mark.parametrize('option', ['certfile', 'keyfile'])
def test_missing_cert_or_key_file_is_refused(tmp_path, option):
    present = tmp_path / 'present.pem'
    present.write_text('x')
    other = 'keyfile' if option == 'certfile' else 'certfile'
    message = error_of(cfg.parse_requester, _requester_with_tls(
        '%s = %s\n%s = %s' % (option, tmp_path / 'missing.pem', other, present)))
    assert "'%s'" % option in message and 'does not exist' in message


def test_keyfile_without_certfile_is_refused(tmp_path):
    key = tmp_path / 'key.pem'
    key.write_text('x')
    message = error_of(cfg.parse_requester, _requester_with_tls('keyfile = %s' % key))
    assert "'keyfile'" in message


def test_disabled_tls_does_not_check_files(tmp_path):
    options = cfg.parse_requester(_requester_with_tls('''
        enable = false
        ca_certs = %s
        ''' % (tmp_path / 'missing.pem')))
    assert options.connection.tls.enable is False


def test_tls_options_are_read(tmp_path):
    files = {}
    for name in ('ca', 'cert', 'key'):
        files[name] = tmp_path / (name + '.pem')
        files[name].write_text('x')
    options = cfg.parse_requester(_requester_with_tls('''
        enable = true
        ca_certs = %(ca)s
        certfile = %(cert)s
        keyfile = %(key)s
        tls_version = TLSv1.2
        ciphers = ECDHE-RSA-AES256-GCM-SHA384
        ''' % files))
    tls = options.connection.tls
    assert tls == cfg.TLSOptions(enable=True, ca_certs=str(files['ca']),
                                 certfile=str(files['cert']), keyfile=str(files['key']),
                                 certs_required=ssl.CERT_REQUIRED, tls_version='tlsv1.2',
                                 ciphers='ECDHE-RSA-AES256-GCM-SHA384')


def test_bad_tls_version():
    message = error_of(cfg.parse_requester, _requester_with_tls('tls_version = ssl2'))
    assert "'tls_version'" in message and '[Replicator][Requester][tls]' in message


def test_bad_tls_enable():
    message = error_of(cfg.parse_requester, _requester_with_tls('enable = kinda'))
    assert "'enable'" in message and '[Replicator][Requester][tls]' in message


def test_tls_version_spelling_of_existing_mqtt_extensions_is_accepted():
    options = cfg.parse_requester(_requester_with_tls('tls_version = tlsv12'))
    assert options.connection.tls.tls_version is not None


# ---------------------------------------------------------------------------------------------
#  Names and topics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('instance', ['a/b', 'a+b', 'a#b', '+', '#'])
@pytest.mark.parametrize('role', ['Requester', 'Responder'])
def test_instance_names_with_topic_characters_are_refused(instance, role):
    config = configobj.ConfigObj({'Replicator': {role: {
        'enable': 'true', instance: {'wx_binding': {'type': 'main'}}}}})
    parse = cfg.parse_requester if role == 'Requester' else cfg.parse_responder
    message = error_of(parse, config)
    assert message == 'section [Replicator][%s][%s]: an instance name cannot contain ' \
                      '/, + or #' % (role, instance)


TOPIC_OPTIONS = ['request_topic', 'response_topic', 'archive_topic', 'status_topic']


@pytest.mark.parametrize('option', TOPIC_OPTIONS)
@pytest.mark.parametrize('value', ['a/+/b', '+', 'a/#', '#', 'replicate/request/', 'x+y'])
def test_topic_prefixes_with_wildcards_or_trailing_slash_are_refused(option, value):
    config = configobj.ConfigObj({'Replicator': {'Requester': {
        option: value, 'weewx': {'wx_binding': {'type': 'main'}}}}})
    message = error_of(cfg.parse_requester, config)
    assert message.startswith("option '%s' in section %s: '%s'" % (option, REQ, value))


@pytest.mark.parametrize('option', TOPIC_OPTIONS)
def test_topic_prefixes_are_read(option):
    options = cfg.parse_requester(requester_conf('%s = site/one/%s' % (option, option)))
    assert getattr(options.connection, option) == 'site/one/%s' % option


@pytest.mark.parametrize('option', TOPIC_OPTIONS)
def test_empty_topic_prefix_falls_back_to_default(option):
    options = cfg.parse_requester(requester_conf('%s = ""' % option))
    assert getattr(options.connection, option) == \
        getattr(cfg.ConnectionOptions, option)


# ---------------------------------------------------------------------------------------------
#  Client id
# ---------------------------------------------------------------------------------------------

def test_default_clientid_is_stable_for_one_station():
    first = cfg.parse_requester(requester_conf(WEEWX_ROOT='/home/weewx-data'))
    second = cfg.parse_requester(requester_conf(WEEWX_ROOT='/home/weewx-data'))
    assert first.connection.clientid == second.connection.clientid


def test_default_clientid_differs_between_stations_on_one_host():
    one = cfg.parse_requester(requester_conf(WEEWX_ROOT='/srv/station-one'))
    two = cfg.parse_requester(requester_conf(WEEWX_ROOT='/srv/station-two'))
    assert one.connection.clientid != two.connection.clientid


def test_default_clientid_names_the_role():
    config = both_roles()
    config['WEEWX_ROOT'] = '/srv/station'
    req = cfg.parse_requester(config).connection.clientid
    resp = cfg.parse_responder(config).connection.clientid
    assert 'requester' in req and 'responder' not in req
    assert 'responder' in resp and 'requester' not in resp
    assert req != resp
    assert req.startswith('mqttreplicate-requester-')
    assert resp.startswith('mqttreplicate-responder-')


def test_default_clientid_has_no_topic_characters(monkeypatch):
    monkeypatch.setattr(cfg.socket, 'gethostname', lambda: 'we+ird/host#name.example.org')
    clientid = cfg.parse_requester(requester_conf(WEEWX_ROOT='/srv/x')).connection.clientid
    assert not any(c in clientid for c in '/+#')
    assert 'we-ird-host-name' in clientid       # the short host name, sanitised
    assert 'example' not in clientid


def test_default_clientid_with_empty_hostname(monkeypatch):
    monkeypatch.setattr(cfg.socket, 'gethostname', lambda: '')
    clientid = cfg.parse_requester(requester_conf(WEEWX_ROOT='/srv/x')).connection.clientid
    assert clientid.startswith('mqttreplicate-requester-host-')


def test_configured_clientid_is_used():
    options = cfg.parse_requester(requester_conf('clientid = my-secondary'))
    assert options.connection.clientid == 'my-secondary'


@pytest.mark.parametrize('clientid', ['a/b', 'a+b', 'a#b'])
def test_configured_clientid_with_topic_characters_is_refused(clientid):
    config = configobj.ConfigObj({'Replicator': {'Requester': {
        'clientid': clientid, 'weewx': {'wx_binding': {'type': 'main'}}}}})
    message = error_of(cfg.parse_requester, config)
    assert "'clientid'" in message


def test_shared_clientid_does_not_give_both_roles_the_same_id():
    config = both_roles(top='clientid = station-a')
    try:
        req = cfg.parse_requester(config).connection.clientid
        resp = cfg.parse_responder(config).connection.clientid
    except ConfigError:
        return
    assert req != resp


# ---------------------------------------------------------------------------------------------
#  Secrets and logging
# ---------------------------------------------------------------------------------------------

def test_describe_masks_password():
    options = cfg.parse_requester(requester_conf('''
        username = alice
        password = Pa55-w0rd-XYZ
        '''))
    text = options.connection.describe()
    assert 'Pa55-w0rd-XYZ' not in text
    assert 'password=****' in text
    assert 'username=alice' in text
    assert 'Pa55-w0rd-XYZ' not in repr(options)
    assert 'Pa55-w0rd-XYZ' not in repr(options.connection)
    assert 'Pa55-w0rd-XYZ' not in str(options)


def test_shared_secret_is_accepted_and_masked():
    """Signed messages (SPEC 5.7): the secret is read as it is written, and never shown."""
    options = cfg.parse_requester(requester_conf('shared_secret = hmac-key-QWERTY'))
    c = options.connection
    assert c.shared_secret == 'hmac-key-QWERTY'
    assert 'shared_secret=****' in c.describe()
    for text in (c.describe(), repr(options), repr(c), str(options)):
        assert 'hmac-key-QWERTY' not in text


def test_shared_secret_is_inherited_by_both_roles():
    config = both_roles(top='shared_secret = "0123456789abcdef, with a comma"')
    for options in (cfg.parse_requester(config), cfg.parse_responder(config)):
        assert options.connection.shared_secret == '0123456789abcdef, with a comma'
        assert '0123456789abcdef' not in options.connection.describe()


def test_shared_secret_of_a_role_overrides_the_inherited_one():
    config = both_roles(top='shared_secret = top-secret', requester='shared_secret = mine')
    assert cfg.parse_requester(config).connection.shared_secret == 'mine'
    assert cfg.parse_responder(config).connection.shared_secret == 'top-secret'


def test_empty_shared_secret_means_no_signing():
    options = cfg.parse_requester(requester_conf('shared_secret = ""'))
    assert options.connection.shared_secret is None
    assert '****' not in options.connection.describe()


def test_describe_without_secrets():
    text = cfg.parse_requester(requester_conf()).connection.describe()
    assert '****' not in text
    assert 'host=localhost' in text and 'port=1883' in text


def test_describe_shows_tls_without_secrets(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('x')
    config = _requester_with_tls('ca_certs = %s' % ca)
    config['Replicator']['Requester']['password'] = 'TopSecret99'
    text = cfg.parse_requester(config).connection.describe()
    assert 'tls=(' in text and str(ca) in text
    assert 'TopSecret99' not in text


@pytest.mark.parametrize('option', ['throttle_count', 'throttle_sleep'])
@pytest.mark.parametrize('where', ['role', 'top'])
def test_throttle_options_ignored_by_the_requester_used_by_the_responder(caplog, option,
                                                                         where):
    """The requester pulls pages, so throttle_* mean nothing to it (logged as ignored); the
    responder uses them to pace answers to protocol-1 requesters."""
    caplog.set_level(logging.INFO, logger=CONFIG_LOGGER)
    if where == 'role':
        config = both_roles(requester='%s = 5' % option, responder='%s = 5' % option)
    else:
        config = both_roles(top='%s = 5' % option)
    cfg.parse_requester(config)
    responder = cfg.parse_responder(config)
    ignored = [r for r in caplog.records
               if r.name == CONFIG_LOGGER and option in r.getMessage()
               and 'ignored' in r.getMessage()]
    assert len(ignored) == 1
    assert REQ in ignored[0].getMessage()
    assert ignored[0].levelno == logging.INFO
    assert getattr(responder, option) == 5


def test_throttle_defaults_of_the_responder():
    responder = cfg.parse_responder(both_roles())
    assert (responder.throttle_count, responder.throttle_sleep) == (100, 1.0)


def test_ignored_option_in_binding_section_is_logged(caplog):
    caplog.set_level(logging.INFO, logger=CONFIG_LOGGER)
    config = requester_conf(extra='')
    config['Replicator']['Requester']['weewx']['wx_binding']['throttle_count'] = '3'
    cfg.parse_requester(config)
    messages = [r.getMessage() for r in caplog.records if r.name == CONFIG_LOGGER]
    assert any('throttle_count' in m and 'ignored' in m
               and '[Replicator][Requester][weewx][wx_binding]' in m for m in messages)


def test_no_ignored_log_without_ignored_options(caplog):
    caplog.set_level(logging.INFO, logger=CONFIG_LOGGER)
    cfg.parse_requester(requester_conf())
    assert not [r for r in caplog.records if 'ignored' in r.getMessage()]


def test_password_never_logged_while_parsing(caplog):
    caplog.set_level(logging.DEBUG)
    cfg.parse_requester(requester_conf('password = NeverLogMe123\nthrottle_count = 2'))
    assert 'NeverLogMe123' not in caplog.text


# ---------------------------------------------------------------------------------------------
#  Responder specifics and ordering
# ---------------------------------------------------------------------------------------------

def test_workers_alias_max_responder_threads():
    assert cfg.parse_responder(responder_conf('max_responder_threads = 4')).workers == 4
    assert cfg.parse_responder(responder_conf('workers = 3')).workers == 3
    both = cfg.parse_responder(responder_conf('workers = 2\nmax_responder_threads = 5'))
    assert both.workers == 2


def test_responder_options_are_read():
    options = cfg.parse_responder(responder_conf('''
        delta = 120
        batch_size = 250
        page_size = 2000
        '''))
    assert (options.enable, options.delta, options.batch_size, options.page_size) == \
        (True, 120, 250, 2000)


def test_requester_options_are_read():
    options = cfg.parse_requester(requester_conf('''
        loop_interval = 1.5
        archive_interval = 600
        catchup = engine
        page_size = 100
        page_timeout = 5
        startup_max_tries = 4
        startup_wait_before_retry = 2.5
        log_msg_count = 10
        verify_days = 0
        '''))
    assert options.loop_interval == 1.5
    assert options.archive_interval == 600
    assert options.catchup == 'engine'
    assert options.page_size == 100
    assert options.page_timeout == 5.0
    assert options.startup_max_tries == 4
    assert options.startup_wait_before_retry == 2.5
    assert options.log_msg_count == 10
    assert options.verify_days == 0


def _many_bindings(role):
    return conf('''
        [Replicator]
            [[%s]]
                enable = true
                [[[zeta]]]
                    [[[[z_binding]]]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
                    [[[[aa_binding]]]]
                [[[alpha]]]
                    [[[[zz_binding]]]]
        ''' % role)


def test_ordered_bindings_puts_main_last():
    for parse, role in ((cfg.parse_requester, 'Requester'),
                        (cfg.parse_responder, 'Responder')):
        options = parse(_many_bindings(role))
        ordered = options.ordered_bindings()
        assert ordered[-1].key == 'weewx/wx_binding'
        assert ordered[-1].is_main
        assert not any(b.is_main for b in ordered[:-1])
        assert sorted(b.key for b in ordered) == sorted(b.key for b in options.bindings)
        assert options.instances == ['alpha', 'weewx', 'zeta']


@pytest.mark.parametrize('value', ['nan', 'inf'])
def test_non_finite_real_is_refused(value):
    message = error_of(cfg.parse_requester, requester_conf('loop_interval = %s' % value))
    assert "'loop_interval'" in message


def test_bad_inherited_value_names_the_section_it_is_in():
    config = both_roles(top='port = abc')
    message = error_of(cfg.parse_requester, config)
    assert message == "option 'port' in section [Replicator]: 'abc' is not an integer"


# ---------------------------------------------------------------------------------------------
#  The stanza's name: [Replicator], or [MQTTReplicate] of the earlier extension
# ---------------------------------------------------------------------------------------------

def renamed(config, name):
    """The same configuration with its [Replicator] stanza named `name` instead."""
    config.rename('Replicator', name)
    return config


def _without_section(options):
    """A parsed role with its connection's `section` set to the default, for comparing."""
    return dataclasses.replace(options, connection=dataclasses.replace(
        options.connection, section='Replicator'))


EXAMPLES = {
    'requester': lambda: requester_conf('page_size = 77\nusername = bob', top='port = 1884'),
    'responder': lambda: responder_conf('batch_size = 12', top='host = primary.lan'),
    'both': lambda: both_roles(top='keepalive = 30\nshared_secret = k', requester='verify_days = 2',
                               responder='workers = 3'),
}


@pytest.mark.parametrize('example', sorted(EXAMPLES))
def test_the_earlier_stanza_is_read_unchanged(example):
    for parse in (cfg.parse_requester, cfg.parse_responder):
        new = EXAMPLES[example]()
        if not cfg.has_role(new, 'Requester' if parse is cfg.parse_requester else 'Responder'):
            continue
        legacy = renamed(EXAMPLES[example](), 'MQTTReplicate')
        from_new, from_legacy = parse(new), parse(legacy)
        assert from_new.connection.section == 'Replicator'
        assert from_legacy.connection.section == 'MQTTReplicate'
        assert _without_section(from_legacy) == from_new


def test_stanza_name():
    assert cfg.stanza_name(requester_conf()) == 'Replicator'
    assert cfg.stanza_name(renamed(requester_conf(), 'MQTTReplicate')) == 'MQTTReplicate'
    assert cfg.stanza_name(conf('[Station]\n    station_type = Simulator')) == 'Replicator'
    assert cfg.stanza_name(configobj.ConfigObj()) == 'Replicator'
    assert cfg.stanza_name(None) == 'Replicator'
    both = requester_conf()
    both['MQTTReplicate'] = {'host': 'x'}
    assert cfg.stanza_name(both) == 'Replicator'


# Broken configurations, written with [Replicator]: each error must name the stanza in use.
BROKEN = {
    'bad integer in the role': (cfg.parse_requester, lambda: requester_conf('page_size = many')),
    'bad inherited value': (cfg.parse_responder, lambda: both_roles(top='port = abc')),
    'bad real': (cfg.parse_requester, lambda: requester_conf('loop_interval = soon')),
    'bad boolean': (cfg.parse_responder, lambda: responder_conf(enable='maybe')),
    'missing role': (cfg.parse_requester, lambda: conf('[Replicator]\n    host = x')),
    'role as an option': (cfg.parse_responder,
                          lambda: configobj.ConfigObj({'Replicator': {'Responder': 'yes'}})),
    'no binding': (cfg.parse_requester, lambda: conf('[Replicator]\n    [[Requester]]')),
    'bad type': (cfg.parse_requester, lambda: conf('''
        [Replicator]
            [[Requester]]
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = primary
        ''')),
    'instance name': (cfg.parse_requester, lambda: configobj.ConfigObj(
        {'Replicator': {'Requester': {'a/b': {'wx_binding': {'type': 'main'}}}}})),
    'bad tls version': (cfg.parse_requester, lambda: _requester_with_tls('tls_version = ssl2')),
    'two mains': (cfg.parse_responder, lambda: _two_mains()),
    'bad topic': (cfg.parse_requester, lambda: requester_conf('archive_topic = a/#')),
    'stanza as an option': (cfg.parse_requester,
                            lambda: configobj.ConfigObj({'Replicator': 'yes'})),
}


def _two_mains():
    return conf('''
        [Replicator]
            [[Responder]]
                enable = true
                [[[weewx]]]
                    [[[[wx_binding]]]]
                        type = main
                [[[other]]]
                    [[[[other_binding]]]]
                        type = main
        ''')


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_errors_name_the_stanza_in_use(case):
    parse, make = BROKEN[case]
    message = error_of(parse, make())
    assert '[Replicator' in message and 'MQTTReplicate' not in message, message
    legacy = error_of(parse, renamed(make(), 'MQTTReplicate'))
    assert legacy == message.replace('[Replicator', '[MQTTReplicate'), legacy
    assert 'Replicator]' not in legacy.replace('MQTTReplicate', ''), legacy


@pytest.mark.parametrize('extra', [
    {},                                         # an empty [MQTTReplicate] next to [Replicator]
    {'host': 'old.lan', 'Requester': {'weewx': {'wx_binding': {'type': 'main'}}},
     'Responder': {'enable': 'true', 'weewx': {'wx_binding': {'type': 'main'}}}},
])
def test_both_stanzas_are_an_error_naming_both(extra):
    config = both_roles()
    config['MQTTReplicate'] = extra
    for parse in (cfg.parse_requester, cfg.parse_responder):
        message = error_of(parse, config)
        assert '[Replicator]' in message and '[MQTTReplicate]' in message, message
        assert message.startswith('sections [Replicator] and [MQTTReplicate] are both present')


def test_has_role_of_the_earlier_stanza_and_of_both():
    legacy = renamed(both_roles(), 'MQTTReplicate')
    assert cfg.has_role(legacy, 'Requester') and cfg.has_role(legacy, 'Responder')
    only_host = conf('[MQTTReplicate]\n    host = x')
    assert not cfg.has_role(only_host, 'Responder')
    # Both present: the role counts if either has it, so that parsing reports the conflict
    # instead of the role being skipped without a word.
    config = conf('[Replicator]\n    host = x')
    config['MQTTReplicate'] = {'Responder': {'enable': 'true'}}
    assert cfg.has_role(config, 'Responder')
    assert not cfg.has_role(config, 'Requester')
    assert 'both present' in error_of(cfg.parse_responder, config)


def test_describe_names_the_stanza():
    legacy = renamed(requester_conf(), 'MQTTReplicate')
    assert 'section=MQTTReplicate' in cfg.parse_requester(legacy).connection.describe()
    assert 'section=Replicator' in cfg.parse_requester(requester_conf()).connection.describe()
