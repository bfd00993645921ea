"""Configuration of MQTTReplicate: parsed once, at the edge, into typed objects.

The stanza is [Replicator], as the design card names it.  A station that runs the earlier
extension has its stanza as [MQTTReplicate]; that one is read unchanged when there is no
[Replicator] (both at once is an error naming both).  It looks like this::

    [Replicator]
        driver = user.mqttreplicate
        host = localhost            # connection options here are inherited by both roles
        [[Requester]]
            [[[weewx]]]                      # instance name
                [[[[wx_binding]]]]           # the primary's binding name
                    type = main
                    secondary_data_binding = wx_binding
        [[Responder]]
            enable = true
            [[[weewx]]]
                [[[[wx_binding]]]]
                    type = main

Everything below works on the dataclasses built here; nothing else reads raw strings.
"""

import dataclasses
import difflib
import hashlib
import logging
import math
import os
import socket
import ssl
from typing import Optional, Tuple

log = logging.getLogger(__name__)

STANZA = 'Replicator'              # the stanza's name: the installer writes it
LEGACY_STANZA = 'MQTTReplicate'    # the earlier extension's name, still read
STANZAS = (STANZA, LEGACY_STANZA)
# The default name; the one a station uses is stanza_name(config_dict).
SECTION = STANZA

# Every name parsing reads is listed below: misnamed() warns about any other name it finds
# in the stanza (tests/unit/test_config_names.py checks the parsers against these lists).
# Options of the connection, shared by both roles and inheritable from the stanza.
CONNECTION_OPTIONS = (
    'host', 'port', 'keepalive', 'username', 'password', 'clientid', 'log_mqtt',
    'subscribe_qos', 'publish_qos', 'request_topic', 'response_topic', 'archive_topic',
    'status_topic', 'session_expiry_interval', 'min_delay', 'max_delay', 'compress',
    'max_message_bytes', 'shared_secret', 'bind_address',
)
REQUESTER_OPTIONS = (
    'loop_interval', 'archive_interval', 'catchup', 'page_size', 'page_timeout',
    'startup_max_tries', 'startup_wait_before_retry', 'archive_max_tries',
    'archive_wait_before_retry', 'log_msg_count', 'verify_days', 'verify_cycle_days',
    'enable', 'delta', 'throttle_count', 'throttle_sleep', 'status_heartbeat',
)
RESPONDER_OPTIONS = (
    'enable', 'delta', 'batch_size', 'page_size', 'workers', 'max_responder_threads',
    'throttle_count', 'throttle_sleep', 'log_msg_count', 'loop_interval', 'archive_interval',
    'verify_days', 'catchup', 'status_heartbeat', 'live_format',
)
LIVE_FORMATS = ('auto', 'json')
IGNORED_OPTIONS = ('throttle_count', 'throttle_sleep', 'direct_update', 'archive_max_tries',
                   'archive_wait_before_retry')
RESERVED_NAMES = ('tls',)
STATUS_HEARTBEAT = 10      # archive intervals between republished steady statuses
TLS_OPTIONS = ('enable', 'ca_certs', 'certfile', 'keyfile', 'certs_required', 'cert_reqs',
               'tls_version', 'ciphers')
BINDING_OPTIONS = ('type', 'secondary_data_binding', 'initialize')
ROLES = ('Requester', 'Responder')
HOMEASSISTANT = 'HomeAssistant'
HOMEASSISTANT_OPTIONS = ('enable', 'discovery_prefix')
# the subsections the stanza itself may have
STANZA_SECTIONS = ROLES + RESERVED_NAMES + (HOMEASSISTANT,)
# The names each kind of section may hold: options, and sections of known names (an
# instance section's and a role section's other subsections are instances and bindings).
STANZA_NAMES = ('driver',) + CONNECTION_OPTIONS + REQUESTER_OPTIONS + RESPONDER_OPTIONS \
    + IGNORED_OPTIONS
ROLE_NAMES = {'Requester': CONNECTION_OPTIONS + REQUESTER_OPTIONS + IGNORED_OPTIONS,
              'Responder': CONNECTION_OPTIONS + RESPONDER_OPTIONS + IGNORED_OPTIONS}
DEFAULT_BINDING = 'wx_binding'     # WeeWX's default [StdArchive] data_binding
# Accepted spellings (those of MQTTSubscribe / weewx-mqtt included) -> minimum TLS version
TLS_VERSIONS = {
    'tls': None, 'sslv23': None, 'tlsv1': None, 'tlsv11': None, 'tlsv1.1': None,
    'tlsv12': 'tlsv1.2', 'tlsv1.2': 'tlsv1.2', 'tlsv13': 'tlsv1.3', 'tlsv1.3': 'tlsv1.3',
}
CERT_REQS = {'none': ssl.CERT_NONE, 'optional': ssl.CERT_OPTIONAL, 'required': ssl.CERT_REQUIRED}
CERT_NAMES = {v: k for k, v in CERT_REQS.items()}


class ConfigError(ValueError):
    """A configuration value is missing or wrong. The message names the option and section."""


@dataclasses.dataclass(frozen=True)
class TLSOptions:
    enable: bool = False
    ca_certs: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    certs_required: int = ssl.CERT_REQUIRED
    tls_version: Optional[str] = None
    ciphers: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """How one role connects to the broker, and the topic prefixes it uses."""
    role: str
    clientid: str
    host: str = 'localhost'
    port: int = 1883
    keepalive: int = 60
    username: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    log_mqtt: bool = False
    subscribe_qos: int = 1
    publish_qos: int = 1
    request_topic: str = 'replicate/request'
    response_topic: str = 'replicate/response'
    archive_topic: str = 'replicate/archive'
    status_topic: str = 'replicate/status'
    session_expiry_interval: int = 86400
    min_delay: int = 1
    max_delay: int = 120
    compress: bool = True
    max_message_bytes: int = 262144
    shared_secret: Optional[str] = dataclasses.field(default=None, repr=False)
    bind_address: str = ''
    tls: TLSOptions = TLSOptions()
    section: str = STANZA          # the stanza these options came from, for log lines

    def describe(self):
        """The effective options as one line, secrets masked."""
        fields = dataclasses.asdict(self)
        fields.pop('tls')
        for secret in ('password', 'shared_secret'):
            if fields[secret] is not None:
                fields[secret] = '****'
        text = ', '.join('%s=%s' % (k, v) for k, v in fields.items())
        tls = self.tls
        if tls.enable:
            text += ', tls=(ca_certs=%s, certfile=%s, keyfile=%s, certs_required=%s, ' \
                    'tls_version=%s)' % (tls.ca_certs, tls.certfile, tls.keyfile,
                                         CERT_NAMES[tls.certs_required], tls.tls_version)
        return text


@dataclasses.dataclass(frozen=True)
class HomeAssistantOptions:
    """[[HomeAssistant]] under the stanza: MQTT discovery of this station's replication
    sensors (homeassistant.py), off by default."""
    enable: bool = False
    discovery_prefix: str = 'homeassistant'


@dataclasses.dataclass(frozen=True)
class BindingOptions:
    """One replicated binding of one instance."""
    instance: str
    name: str                      # the primary's binding name
    type: str = 'secondary'        # 'main' or 'secondary'
    secondary_data_binding: str = ''   # requester: where it is stored here
    initialize: bool = True
    section: str = dataclasses.field(default='', compare=False)   # its section, for messages

    def where(self, option=None):
        """'option 'x' in section [..]', or 'section [..]', for messages."""
        if option is None:
            return 'section [%s]' % self.section
        return "option '%s' in section [%s]" % (option, self.section)

    @property
    def key(self):
        """The binding key that travels in the user property data_binding."""
        return '%s/%s' % (self.instance, self.name)

    @property
    def is_main(self):
        return self.type == 'main'


@dataclasses.dataclass(frozen=True)
class RequesterOptions:
    connection: ConnectionOptions
    bindings: Tuple[BindingOptions, ...]
    loop_interval: float = 2.5
    archive_interval: int = 300
    catchup: str = 'direct'
    page_size: int = 5000
    page_timeout: float = 60.0
    startup_max_tries: int = 2
    startup_wait_before_retry: float = 10.0
    log_msg_count: int = 0
    verify_days: int = 7
    verify_cycle_days: int = 30
    homeassistant: HomeAssistantOptions = HomeAssistantOptions()
    # a steady status is republished every this many archive intervals (1: every record)
    status_heartbeat: int = STATUS_HEARTBEAT

    @property
    def instances(self):
        return sorted({b.instance for b in self.bindings})

    @property
    def main_binding(self):
        for binding in self.bindings:
            if binding.is_main:
                return binding
        return None

    def ordered_bindings(self):
        """Bindings in catch-up order: other bindings first, main last."""
        return sorted(self.bindings, key=lambda b: (b.is_main, b.key))


@dataclasses.dataclass(frozen=True)
class ResponderOptions:
    connection: ConnectionOptions
    bindings: Tuple[BindingOptions, ...]
    enable: bool = False
    delta: int = 60
    batch_size: int = 1000
    page_size: int = 10000
    workers: int = 1
    throttle_count: int = 100       # protocol-1 answers only: records between pauses
    throttle_sleep: float = 1.0     # protocol-1 answers only: the pause, in seconds
    homeassistant: HomeAssistantOptions = HomeAssistantOptions()
    # a steady status is republished every this many archive intervals (1: every record)
    status_heartbeat: int = STATUS_HEARTBEAT
    # auto: compact live records while every secondary known takes them; json: always the
    # plain JSON object with the whole day's summaries (older requesters, protocol 1)
    live_format: str = 'auto'

    @property
    def instances(self):
        return sorted({b.instance for b in self.bindings})

    def ordered_bindings(self):
        """Bindings in publishing order: other bindings first, main last."""
        return sorted(self.bindings, key=lambda b: (b.is_main, b.key))


# ---------------------------------------------------------------------------------------------
#  Value parsing
# ---------------------------------------------------------------------------------------------

class _Section:
    """Typed reads from one configobj section, with inheritance from a parent section."""

    def __init__(self, section, path, parent=None):
        self.section = section if section is not None else {}
        self.path = path
        self.parent = parent

    def raw(self, name):
        if name in self.section and not _is_section(self.section[name]):
            return self.section[name]
        if self.parent is not None:
            return self.parent.raw(name)
        return None

    def where(self, name):
        section = self
        while section.parent is not None and not (
                name in section.section and not _is_section(section.section[name])):
            section = section.parent
        return "option '%s' in section [%s]" % (name, section.path)

    def string(self, name, default=None):
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, list):
            value = ','.join(value)
        value = str(value).strip()
        return value if value != '' else default

    def integer(self, name, default, minimum=None, maximum=None):
        value = self.raw(name)
        if value is None or value == '':
            return default
        try:
            number = int(str(value).strip(), 0)
        except ValueError:
            raise ConfigError("%s: '%s' is not an integer" % (self.where(name), value))
        self._check_range(name, number, minimum, maximum)
        return number

    def real(self, name, default, minimum=None, maximum=None):
        value = self.raw(name)
        if value is None or value == '':
            return default
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ConfigError("%s: '%s' is not a number" % (self.where(name), value))
        if not math.isfinite(number):
            raise ConfigError("%s: '%s' is not a finite number" % (self.where(name), value))
        self._check_range(name, number, minimum, maximum)
        return number

    def boolean(self, name, default):
        value = self.raw(name)
        if value is None or value == '':
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ('true', 'yes', 'on', '1'):
            return True
        if text in ('false', 'no', 'off', '0', 'none'):
            return False
        raise ConfigError("%s: '%s' is not true or false" % (self.where(name), value))

    def choice(self, name, default, choices):
        value = self.string(name, default)
        if value is None:
            return None
        if value.lower() not in choices:
            raise ConfigError("%s: '%s' is not one of %s"
                              % (self.where(name), value, ', '.join(choices)))
        return value.lower()

    def topic(self, name, default):
        value = self.string(name, default)
        if not value or any(c in value for c in '+#') or value.endswith('/'):
            raise ConfigError("%s: '%s' is not a usable topic prefix (no +, # or trailing /)"
                              % (self.where(name), value))
        return value

    def _check_range(self, name, number, minimum, maximum):
        if minimum is not None and number < minimum:
            raise ConfigError("%s: %s is less than %s" % (self.where(name), number, minimum))
        if maximum is not None and number > maximum:
            raise ConfigError("%s: %s is more than %s" % (self.where(name), number, maximum))


def _is_section(value):
    return hasattr(value, 'keys')


def station_tag(config_dict):
    """A short, stable tag for this station, so two stations on one host differ."""
    root = str(config_dict.get('WEEWX_ROOT', '') if config_dict else '')
    return hashlib.sha1(os.path.abspath(root).encode('utf-8')).hexdigest()[:6]


def default_clientid(role, config_dict):
    host = socket.gethostname().split('.')[0] or 'host'
    host = ''.join(c if c.isalnum() or c in '-_' else '-' for c in host)
    return 'mqttreplicate-%s-%s-%s' % (role, host, station_tag(config_dict))


def _parse_tls(section: _Section):
    owner = section
    tls_section = section.section.get('tls')
    if tls_section is None and section.parent is not None:
        owner = section.parent
        tls_section = owner.section.get('tls')
    if tls_section is None:
        return TLSOptions()
    if not _is_section(tls_section):
        raise ConfigError("tls in section [%s] must be a section" % owner.path)
    tls = _Section(tls_section, owner.path + '][tls')
    enable = tls.boolean('enable', True)
    reqs_name = tls.string('certs_required', None) or tls.string('cert_reqs', None) or 'required'
    reqs_name = reqs_name.lower()
    if reqs_name.startswith('cert_'):
        reqs_name = reqs_name[5:]
    if reqs_name not in CERT_REQS:
        raise ConfigError("%s: '%s' is not one of none, optional, required"
                          % (tls.where('certs_required'), reqs_name))
    version = tls.string('tls_version', None)
    if version is not None:
        version = version.lower()
        if version not in TLS_VERSIONS:
            raise ConfigError("%s: '%s' is not one of %s"
                              % (tls.where('tls_version'), version, ', '.join(TLS_VERSIONS)))
    options = TLSOptions(enable=enable, ca_certs=tls.string('ca_certs'),
                         certfile=tls.string('certfile'), keyfile=tls.string('keyfile'),
                         certs_required=CERT_REQS[reqs_name],
                         tls_version=TLS_VERSIONS[version] if version else None,
                         ciphers=tls.string('ciphers'))
    for name in ('ca_certs', 'certfile', 'keyfile'):
        path = getattr(options, name)
        if enable and path and not os.path.exists(path):
            raise ConfigError("%s: file '%s' does not exist" % (tls.where(name), path))
    if enable and bool(options.certfile) != bool(options.keyfile) and options.keyfile:
        raise ConfigError("%s: keyfile given without certfile" % tls.where('keyfile'))
    return options


def _clientid(section: _Section, role, config_dict):
    """The role's own clientid: never inherited, since two clients with one id fight."""
    value = section.section.get('clientid')
    if value is None or _is_section(value) or str(value).strip() == '':
        return default_clientid(role, config_dict)
    value = str(value).strip()
    if any(c in value for c in '/+#') or len(value) > 200:
        raise ConfigError("%s: '%s' cannot be used in a topic (no /, + or #)"
                          % (section.where('clientid'), value))
    return value


def _parse_connection(section: _Section, role, config_dict, stanza):
    qos = dict(minimum=0, maximum=2)
    return ConnectionOptions(
        role=role,
        section=stanza,
        clientid=_clientid(section, role, config_dict),
        host=section.string('host', 'localhost'),
        port=section.integer('port', 1883, 1, 65535),
        keepalive=section.integer('keepalive', 60, 5),
        username=section.string('username'),
        password=section.string('password'),
        log_mqtt=section.boolean('log_mqtt', False),
        subscribe_qos=section.integer('subscribe_qos', 1, **qos),
        publish_qos=section.integer('publish_qos', 1, **qos),
        request_topic=section.topic('request_topic', 'replicate/request'),
        response_topic=section.topic('response_topic', 'replicate/response'),
        archive_topic=section.topic('archive_topic', 'replicate/archive'),
        status_topic=section.topic('status_topic', 'replicate/status'),
        session_expiry_interval=section.integer('session_expiry_interval', 86400, 0,
                                                0xFFFFFFFF),
        min_delay=section.integer('min_delay', 1, 1),
        max_delay=section.integer('max_delay', 120, 1),
        compress=section.boolean('compress', True),
        max_message_bytes=section.integer('max_message_bytes', 262144, 4096),
        shared_secret=section.string('shared_secret'),
        bind_address=section.string('bind_address', '') or '',
        tls=_parse_tls(section),
    )


def _parse_bindings(section: _Section, role):
    bindings = []
    for instance, instance_section in section.section.items():
        if not _is_section(instance_section) or instance in RESERVED_NAMES:
            continue
        if '/' in instance or '+' in instance or '#' in instance:
            raise ConfigError("section [%s][%s]: an instance name cannot contain /, + or #"
                              % (section.path, instance))
        for name, binding_section in instance_section.items():
            if not _is_section(binding_section):
                continue
            path = '%s][%s][%s' % (section.path, instance, name)
            options = _Section(binding_section, path)
            for ignored in IGNORED_OPTIONS:
                if ignored in binding_section:
                    log.info("Option '%s' in section [%s] is ignored", ignored, path)
            bindings.append(BindingOptions(
                instance=instance, name=name,
                type=options.choice('type', 'secondary', ('main', 'secondary')),
                secondary_data_binding=options.string('secondary_data_binding', name),
                initialize=options.boolean('initialize', True), section=path))
    mains = [b for b in bindings if b.is_main]
    if len(mains) > 1:
        raise ConfigError("section [%s]: only one binding can have type = main, found %s"
                          % (section.path, ', '.join(b.key for b in mains)))
    return tuple(bindings)


def _suggestion(name, known):
    """' (did you mean 'x'?)' for the nearest of known, or ''."""
    close = difflib.get_close_matches(name, [k for k in known if k != name], n=1, cutoff=0.6)
    return " (did you mean '%s'?)" % close[0] if close else ''


def _check_data_binding(config_dict, binding: BindingOptions, role):
    """The data binding a binding section names must be one of [DataBindings]."""
    bindings = config_dict.get('DataBindings') if hasattr(config_dict, 'get') else None
    if not _is_section(bindings):
        return                          # not a weewx.conf (a test's minimal dictionary)
    if role == 'responder':
        name, where = binding.name, binding.where() + ' (the name of the binding served)'
    else:
        name = binding.secondary_data_binding
        where = binding.where('secondary_data_binding') \
            if 'secondary_data_binding' in _options_of(config_dict, binding.section) \
            else binding.where() + " (without secondary_data_binding, its name)"
    if name not in bindings or not _is_section(bindings[name]):
        raise ConfigError("%s: there is no data binding '%s' in [DataBindings]%s"
                          % (where, name, _suggestion(name, list(bindings))))


def _options_of(config_dict, path):
    """The section of config_dict at a path 'A][B][C', or {}."""
    section = config_dict
    for part in path.split(']['):
        section = section.get(part) if _is_section(section) else None
    return section if _is_section(section) else {}


def _check_main_binding(config_dict, main: Optional[BindingOptions]):
    """The main binding's records go through the engine, which stores them in
    [StdArchive] data_binding: secondary_data_binding must name that one."""
    archive = config_dict.get('StdArchive') if hasattr(config_dict, 'get') else None
    if main is None or not _is_section(archive):
        return
    engine = str(archive.get('data_binding') or DEFAULT_BINDING).strip()
    if main.secondary_data_binding != engine:
        raise ConfigError("%s: the binding of type = main is stored by the engine, in "
                          "[StdArchive] data_binding = %s, but it names '%s'; make them the "
                          "same (or give this binding type = secondary)"
                          % (main.where('secondary_data_binding'), engine,
                             main.secondary_data_binding))


def misnamed(config_dict):
    """The names in the stanza that parsing does not know, as sentences naming the section
    and the nearest known name: options nobody reads (a misspelt 'prot' leaves the default
    port), a value where a section belongs and a section where a value belongs."""
    present = _present(config_dict)
    if len(present) != 1 or not _is_section(config_dict[present[0]]):
        return []
    stanza = present[0]
    top = config_dict[stanza]
    found = []
    _check_names(top, stanza, STANZA_NAMES, STANZA_SECTIONS, found)
    for role in ROLES:
        section = top.get(role)
        if not _is_section(section):
            continue
        path = '%s][%s' % (stanza, role)
        _check_names(section, path, ROLE_NAMES[role], None, found)
        for instance, instance_section in section.items():
            if not _is_section(instance_section):
                continue
            here = '%s][%s' % (path, instance)
            if instance in RESERVED_NAMES:
                _check_names(instance_section, here, TLS_OPTIONS, (), found)
                continue
            for name, value in instance_section.items():
                if _is_section(value):
                    _check_names(value, '%s][%s' % (here, name),
                                 BINDING_OPTIONS + IGNORED_OPTIONS, (), found)
                else:
                    found.append("option '%s' in section [%s] is ignored: an instance section "
                                 "holds binding sections ([[[[binding]]]]), not options"
                                 % (name, here))
    if _is_section(top.get('tls')):
        _check_names(top['tls'], stanza + '][tls', TLS_OPTIONS, (), found)
    if _is_section(top.get(HOMEASSISTANT)):
        _check_names(top[HOMEASSISTANT], '%s][%s' % (stanza, HOMEASSISTANT),
                     HOMEASSISTANT_OPTIONS, (), found)
    return found


def _check_names(section, path, options, sections, found):
    """Append to found what is wrong with the names of one section. sections: the names
    its subsections may have, or None for any name that is not an option's."""
    for name, value in section.items():
        if _is_section(value):
            if name in options:
                found.append("section [%s][%s] is ignored: '%s' is an option, to be given as "
                             "%s = value in [%s]" % (path, name, name, name, path))
            elif sections is not None and name not in sections:
                found.append("section [%s][%s] is ignored: [%s] has no section '%s'%s"
                             % (path, name, path, name, _suggestion(name, sections)))
        elif name not in options:
            if sections and name in sections or sections is None and name in ROLES:
                found.append("option '%s' in section [%s] is ignored: '%s' must be a "
                             "section" % (name, path, name))
            else:
                found.append("option '%s' in section [%s] is unknown and ignored%s"
                             % (name, path, _suggestion(name, options)))


_warned = set()


def warn_misnamed(config_dict):
    """Log each of misnamed() once per process (the driver and the service both parse)."""
    for text in misnamed(config_dict):
        if text not in _warned:
            _warned.add(text)
            log.warning('config: %s', text)


def _present(config_dict):
    """The stanza names of STANZAS that config_dict has, in the order of STANZAS."""
    if not config_dict or not hasattr(config_dict, 'keys'):
        return []
    return [name for name in STANZAS if name in config_dict]


def stanza_name(config_dict):
    """The name of the stanza this station uses: 'Replicator' when weewx.conf has it,
    else 'MQTTReplicate' when it has that one (the earlier extension's), else 'Replicator'.

    Never raises: with both present it answers 'Replicator' (and parse_requester and
    parse_responder refuse the configuration)."""
    present = _present(config_dict)
    return present[0] if present else STANZA


def _stanza(config_dict):
    """(name, section) of the stanza in use. Raises ConfigError."""
    present = _present(config_dict)
    if len(present) > 1:
        raise ConfigError("sections [%s] and [%s] are both present: keep one of them "
                          "([%s] is read only when there is no [%s])"
                          % (STANZA, LEGACY_STANZA, LEGACY_STANZA, STANZA))
    if not present:
        raise ConfigError("section [%s] is missing" % STANZA)
    name = present[0]
    top = config_dict[name]
    if not _is_section(top):
        raise ConfigError("[%s] must be a section" % name)
    return name, top


def _role_section(config_dict, role_name):
    name, top = _stanza(config_dict)
    parent = _Section(top, name)
    role_dict = top.get(role_name)
    if role_dict is None:
        raise ConfigError("section [%s][%s] is missing" % (name, role_name))
    if not _is_section(role_dict):
        raise ConfigError("[%s][%s] must be a section, not an option" % (name, role_name))
    return name, _Section(role_dict, '%s][%s' % (name, role_name), parent)


def _warn_ignored(section: _Section, used=()):
    for name in IGNORED_OPTIONS:
        if name in used:
            continue
        if section.raw(name) is not None:
            log.info("Option '%s' in section [%s] is ignored: paging makes it unnecessary"
                     if name.startswith('throttle') else
                     "Option '%s' in section [%s] is accepted for compatibility and ignored",
                     name, section.path)


def parse_requester(config_dict) -> RequesterOptions:
    """Parse [Replicator][[Requester]] (or [MQTTReplicate][[Requester]]). Raises ConfigError."""
    stanza, section = _role_section(config_dict, 'Requester')
    _warn_ignored(section)
    warn_misnamed(config_dict)
    bindings = _parse_bindings(section, 'requester')
    if not bindings:
        raise ConfigError("section [%s] names no instance with a binding to replicate"
                          % section.path)
    for binding in bindings:
        _check_data_binding(config_dict, binding, 'requester')
    _check_main_binding(config_dict, next((b for b in bindings if b.is_main), None))
    return RequesterOptions(
        connection=_parse_connection(section, 'requester', config_dict, stanza),
        bindings=bindings,
        loop_interval=section.real('loop_interval', 2.5, 0.1),
        archive_interval=section.integer('archive_interval', 300, 60),
        catchup=section.choice('catchup', 'direct', ('direct', 'engine')),
        page_size=section.integer('page_size', 5000, 1, 1000000),
        page_timeout=section.real('page_timeout', 60.0, 1.0),
        startup_max_tries=section.integer('startup_max_tries', 2, 1),
        startup_wait_before_retry=section.real('startup_wait_before_retry', 10.0, 0.1),
        log_msg_count=section.integer('log_msg_count', 0, 0),
        verify_days=section.integer('verify_days', 7, 0),
        verify_cycle_days=section.integer('verify_cycle_days', 30, 0),
        homeassistant=parse_homeassistant(config_dict),
        status_heartbeat=section.integer('status_heartbeat', STATUS_HEARTBEAT, 1, 1000),
    )


def parse_responder(config_dict) -> ResponderOptions:
    """Parse [Replicator][[Responder]] (or [MQTTReplicate][[Responder]]). Raises ConfigError."""
    stanza, section = _role_section(config_dict, 'Responder')
    _warn_ignored(section, used=('throttle_count', 'throttle_sleep'))
    warn_misnamed(config_dict)
    bindings = _parse_bindings(section, 'responder')
    enable = section.boolean('enable', False)
    if enable and not bindings:
        raise ConfigError("section [%s] names no instance with a binding to replicate"
                          % section.path)
    if enable:
        for binding in bindings:
            _check_data_binding(config_dict, binding, 'responder')
    workers = section.integer('workers', None, 1, 16)
    if workers is None:
        workers = section.integer('max_responder_threads', 1, 1, 16)
    return ResponderOptions(
        connection=_parse_connection(section, 'responder', config_dict, stanza),
        bindings=bindings,
        enable=enable,
        delta=section.integer('delta', 60, 0),
        batch_size=section.integer('batch_size', 1000, 1, 100000),
        page_size=section.integer('page_size', 10000, 1, 1000000),
        workers=workers,
        throttle_count=section.integer('throttle_count', 100, 1),
        throttle_sleep=section.real('throttle_sleep', 1.0, 0.0, 3600.0),
        homeassistant=parse_homeassistant(config_dict),
        status_heartbeat=section.integer('status_heartbeat', STATUS_HEARTBEAT, 1, 1000),
        live_format=section.choice('live_format', 'auto', LIVE_FORMATS),
    )


def parse_homeassistant(config_dict) -> HomeAssistantOptions:
    """Parse [Replicator][[HomeAssistant]] (absent: discovery off). Raises ConfigError."""
    name, top = _stanza(config_dict)
    raw = top.get(HOMEASSISTANT)
    if raw is None:
        return HomeAssistantOptions()
    if not _is_section(raw):
        raise ConfigError("[%s][HomeAssistant] must be a section, not an option" % name)
    section = _Section(raw, '%s][HomeAssistant' % name)
    return HomeAssistantOptions(
        enable=section.boolean('enable', False),
        discovery_prefix=section.topic('discovery_prefix', 'homeassistant'))


def has_role(config_dict, role_name):
    """True if the stanza in use has a [[role_name]] section.  Never raises: with both
    [Replicator] and [MQTTReplicate] present it is True if either has the role, so that
    parsing the role reports the conflict instead of the role being skipped quietly."""
    for name in _present(config_dict):
        top = config_dict[name]
        if _is_section(top) and _is_section(top.get(role_name)):
            return True
    return False
