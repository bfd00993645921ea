"""Configuration editor for 'weectl station reconfigure --driver=user.mqttreplicate'.

WeeWX calls it to get a default [Replicator] stanza (when the station has none),
to prompt for the broker, and finally to adjust the rest of weewx.conf so that
the station works as a secondary:

- [StdArchive] record_generation = hardware: archive records come from the
  driver (the replicated records); WeeWX must not synthesise its own.
- StdCalibrate, StdQC and StdWXCalculate are removed from process_services:
  they would rewrite replicated records (apply corrections twice, apply this
  station's QC limits, recompute derived values), so the copy would no longer
  equal the primary's records.
- [[Requester]] enable = true in the stanza, if the stanza disables it.

A station upgraded from the earlier extension has its stanza as
[MQTTReplicate].  weectl knows only DRIVER_NAME ('Replicator'): finding no
[Replicator], it inserts the default stanza and sets station_type =
Replicator, which would leave the station with two stanzas (an error).  The
editor sees that it was asked for the default stanza (get_conf without one)
and, in modify_config, undoes it: the inserted [Replicator] is removed, the
[MQTTReplicate] stanza gets the driver and station_type = MQTTReplicate, so an
upgraded station needs no edit.  When weectl prompts, it merges the answers
into the [Replicator] it inserted; an answer that differs from the default
stanza is moved into [MQTTReplicate], and an answer left at its default keeps
what [MQTTReplicate] has.

This module imports nothing but WeeWX, so that weectl can load it whatever
else is installed.
"""

import weewx.drivers

# The stanza's name, which is also the driver's DRIVER_NAME and station_type.
STANZA_NAME = 'Replicator'
# The stanza's name in the earlier extension; a station that has it keeps it.
LEGACY_STANZA_NAME = 'MQTTReplicate'
# Every line the editor prints starts with the extension's name.
PREFIX = 'MQTTReplicate'
DRIVER = 'user.mqttreplicate'

# Services that alter archive records before they are stored.
SERVICES_TO_REMOVE = (
    'weewx.engine.StdCalibrate',
    'weewx.engine.StdQC',
    'weewx.wxservices.StdWXCalculate',
)


class MQTTReplicateConfEditor(weewx.drivers.AbstractConfEditor):
    """Provides the stanza and the configuration changes of a secondary station."""

    def __init__(self):
        super().__init__()
        # True once weectl asked for the default stanza: the station had no [Replicator].
        self.default_stanza_given = False

    def get_conf(self, orig_stanza=None):
        """The station's [Replicator] stanza unchanged, or the default one if it has none."""
        if not orig_stanza:
            self.default_stanza_given = True
        return super().get_conf(orig_stanza)

    @property
    def default_stanza(self):
        return """
[Replicator]
    # This station is a secondary: it receives the archive records of a
    # primary station through an MQTT broker.  See the MQTTReplicate
    # documentation (docs/configuration.md) for every option.

    # The driver.
    driver = user.mqttreplicate

    # The MQTT broker.  Connection options set here (host, port, username,
    # password, clientid, [[[tls]]], ...) are inherited by [[Requester]] and
    # [[Responder]]; a value set in one of those sections wins.
    host = localhost
    port = 1883

    [[Requester]]
        enable = true

        # The instance name: it must match the primary's [[Responder]] instance.
        [[[weewx]]]
            # The primary's binding.  Its records go through this station's
            # engine (type = main) and are stored in secondary_data_binding.
            [[[[wx_binding]]]]
                type = main
                secondary_data_binding = wx_binding
"""

    def prompt_for_settings(self):
        """Ask for the broker's host and port.

        weectl merges the answer into [Replicator].  If [[Requester]] sets an
        option itself, that value is the one in effect, so the answer goes
        there instead.  (On a station that keeps its [MQTTReplicate] stanza,
        modify_config moves the answers there.)
        """
        import weecfg

        existing = getattr(self, 'existing_options', None)
        if existing is None:
            existing = {}
            self.existing_options = existing
        requester = existing.get('Requester')
        if not isinstance(requester, dict):
            requester = {}

        print("Specify the MQTT broker that connects this station to its primary.")
        settings = {}
        for label, default in (('host', 'localhost'), ('port', '1883')):
            while True:
                if label in requester:
                    value = weecfg.prompt_with_options(label, requester[label])
                else:
                    value = self._prompt(label, default)
                if label != 'port' or _valid_port(value):
                    break
                print("The port must be a number from 1 to 65535.")
            if label in requester:
                settings.setdefault('Requester', {})[label] = value
            else:
                settings[label] = value
        return settings

    def modify_config(self, config_dict):
        """Make the station a secondary; print one line per change made."""
        name = self._keep_legacy_stanza(config_dict)

        _set_option(config_dict, 'StdArchive', 'record_generation', 'hardware')

        services = config_dict.get('Engine', {}).get('Services')
        if isinstance(services, dict) and 'process_services' in services:
            current = _as_list(services['process_services'])
            kept = [svc for svc in current if svc not in SERVICES_TO_REMOVE]
            if kept != current:
                services['process_services'] = kept
                for svc in current:
                    if svc in SERVICES_TO_REMOVE:
                        print(f"{PREFIX}: removed {svc} from process_services")

        stanza = config_dict.get(name)
        requester = stanza.get('Requester') if isinstance(stanza, dict) else None
        if isinstance(requester, dict) and 'enable' in requester \
                and not _is_true(requester['enable']):
            requester['enable'] = 'true'
            print(f"{PREFIX}: set [{name}] [[Requester]] enable = true")

        if STANZA_NAME in config_dict and LEGACY_STANZA_NAME in config_dict:
            print(f"{PREFIX}: warning: weewx.conf has both [{STANZA_NAME}] and "
                  f"[{LEGACY_STANZA_NAME}]; the driver will not start until one of them "
                  f"is removed")

    def _keep_legacy_stanza(self, config_dict):
        """Undo weectl's default [Replicator] on a station that has [MQTTReplicate].

        Returns the name of the stanza the station uses from now on.
        """
        legacy = config_dict.get(LEGACY_STANZA_NAME)
        if not (self.default_stanza_given and STANZA_NAME in config_dict
                and isinstance(legacy, dict)):
            # As the driver reads it: [Replicator], else [MQTTReplicate].
            if STANZA_NAME not in config_dict and LEGACY_STANZA_NAME in config_dict:
                return LEGACY_STANZA_NAME
            return STANZA_NAME
        added = config_dict[STANZA_NAME]
        driver = added.get('driver', DRIVER) if isinstance(added, dict) else DRIVER
        # What differs from the default stanza is what weectl's prompt answered.
        answers = _differences(added, _parse_stanza(self.default_stanza)) \
            if isinstance(added, dict) else {}
        answers.pop('driver', None)
        del config_dict[STANZA_NAME]
        if legacy.get('driver') != driver:
            legacy['driver'] = driver
        if answers:
            legacy.merge(answers)
            print(f"{PREFIX}: set {', '.join(_paths(answers))} in [{LEGACY_STANZA_NAME}]")
        station = config_dict.get('Station')
        if isinstance(station, dict):
            import weecfg
            weecfg.reorder_sections(config_dict, LEGACY_STANZA_NAME, 'Station', after=True)
            station['station_type'] = LEGACY_STANZA_NAME
        print(f"{PREFIX}: this station keeps its [{LEGACY_STANZA_NAME}] stanza (no "
              f"[{STANZA_NAME}] added); [Station] station_type = {LEGACY_STANZA_NAME}")
        return LEGACY_STANZA_NAME


def confeditor_loader():
    return MQTTReplicateConfEditor()


def _as_list(value):
    """A service list from weewx.conf: a list, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(',')
    return [item.strip() for item in items if item and item.strip()]


def _is_true(value):
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on', 'y', 't')


def _valid_port(value):
    try:
        return 1 <= int(str(value).strip()) <= 65535
    except ValueError:
        return False


def _set_option(config_dict, section, option, value):
    if section not in config_dict:
        config_dict[section] = {}
    old = config_dict[section].get(option)
    if old is None or str(old).strip().lower() != value:
        config_dict[section][option] = value
        was = '' if old is None else f" (was {old})"
        print(f"{PREFIX}: set [{section}] {option} = {value}{was}")



def _parse_stanza(text):
    import configobj
    return configobj.ConfigObj(text.splitlines(), interpolation=False)[STANZA_NAME]


def _differences(section, default):
    """The options of section (nested) whose values differ from default's, as a dict."""
    changed = {}
    for key, value in section.items():
        base = default.get(key) if isinstance(default, dict) else None
        if isinstance(value, dict):
            inner = _differences(value, base if isinstance(base, dict) else {})
            if inner:
                changed[key] = inner
        elif value != base:
            changed[key] = value
    return changed


def _paths(changes, prefix='', depth=2):
    """'host = x', '[[Requester]] port = y', ... for the options in changes."""
    lines = []
    for key, value in changes.items():
        if isinstance(value, dict):
            lines.extend(_paths(value, prefix + '[' * depth + key + ']' * depth + ' ',
                                depth + 1))
        else:
            lines.append(f"{prefix}{key} = {value}")
    return lines
