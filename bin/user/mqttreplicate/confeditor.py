"""Configuration editor for 'weectl station reconfigure --driver=user.mqttreplicate'.

WeeWX calls it to get a default [MQTTReplicate] stanza (when the station has
none), to prompt for the broker, and finally to adjust the rest of weewx.conf
so that the station works as a secondary:

- [StdArchive] record_generation = hardware: archive records come from the
  driver (the replicated records); WeeWX must not synthesise its own.
- StdCalibrate, StdQC and StdWXCalculate are removed from process_services:
  they would rewrite replicated records (apply corrections twice, apply this
  station's QC limits, recompute derived values), so the copy would no longer
  equal the primary's records.
- [MQTTReplicate] [[Requester]] enable = true, if the stanza disables it.

This module imports nothing but WeeWX, so that weectl can load it whatever
else is installed.
"""

import weewx.drivers

# The stanza's name, which is also the driver's DRIVER_NAME and station_type.
STANZA_NAME = 'MQTTReplicate'

# Services that alter archive records before they are stored.
SERVICES_TO_REMOVE = (
    'weewx.engine.StdCalibrate',
    'weewx.engine.StdQC',
    'weewx.wxservices.StdWXCalculate',
)


class MQTTReplicateConfEditor(weewx.drivers.AbstractConfEditor):
    """Provides the stanza and the configuration changes of a secondary station."""

    @property
    def default_stanza(self):
        return """
[MQTTReplicate]
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

        weectl merges the answer into [MQTTReplicate].  If [[Requester]] sets
        an option itself, that value is the one in effect, so the answer goes
        there instead.
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
        _set_option(config_dict, 'StdArchive', 'record_generation', 'hardware')

        services = config_dict.get('Engine', {}).get('Services')
        if isinstance(services, dict) and 'process_services' in services:
            current = _as_list(services['process_services'])
            kept = [svc for svc in current if svc not in SERVICES_TO_REMOVE]
            if kept != current:
                services['process_services'] = kept
                for svc in current:
                    if svc in SERVICES_TO_REMOVE:
                        print(f"{STANZA_NAME}: removed {svc} from process_services")

        stanza = config_dict.get(STANZA_NAME)
        requester = stanza.get('Requester') if isinstance(stanza, dict) else None
        if isinstance(requester, dict) and 'enable' in requester \
                and not _is_true(requester['enable']):
            requester['enable'] = 'true'
            print(f"{STANZA_NAME}: set [{STANZA_NAME}] [[Requester]] enable = true")


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
        print(f"{STANZA_NAME}: set [{section}] {option} = {value}{was}")
