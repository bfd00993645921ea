"""Installer for MQTTReplicate, for use with 'weectl extension'.

    weectl extension install /path/to/weewx-mqttreplicate      (or the .zip)
    weectl extension uninstall MQTTReplicate

The installer copies the package bin/user/mqttreplicate into the station,
adds the responder service to restful_services and adds a commented
[Replicator] stanza with both roles disabled.  It also installs the
Replication skin (skins/Replication) and enables it as the report
[StdReport] [[Replication]], written to HTML_ROOT/replication with the
station's other reports.  It never touches [Station]:
a key the installer declares is deleted again by 'weectl extension
uninstall', so declaring station_type here would break weewxd after an
uninstall.  Making a station a secondary is done with
'weectl station reconfigure --driver=user.mqttreplicate' instead.

A station upgraded from the earlier extension has its stanza as
[MQTTReplicate], which the extension reads unchanged.  Adding [Replicator]
next to it would be an error (two stanzas), so on such a station the
installer adds no stanza at all (see MQTTReplicateInstaller.configure); the
report is added all the same.  Uninstalling removes only what installing
added: the package, the skin, the service, the report and the keys of
[Replicator] (there are none on an upgraded station, whose [MQTTReplicate]
stanza stays).

This file is loaded twice in the life of the extension: by 'install', from
the extension's source tree, and by 'list' / 'uninstall', from the copy that
WeeWX keeps in USER_ROOT/installer/MQTTReplicate/.  In that copy the package
is not next to this file, so the file list is taken from the installed
package instead (see _package_dir), and the skin's from SKIN_FILES.
"""

import glob
import io
import os
import re

import configobj

from weecfg.extension import ExtensionInstaller

NAME = 'MQTTReplicate'
PACKAGE = 'mqttreplicate'
STANZA_NAME = 'Replicator'            # the stanza written into weewx.conf
LEGACY_STANZA_NAME = 'MQTTReplicate'  # the earlier extension's stanza, kept as it is
FALLBACK_VERSION = '0.1.0'

# Used only when uninstalling and the installed package cannot be found:
# the modules the package is known to contain.  A name that does not exist
# is harmless (nothing is deleted for it).
KNOWN_MODULES = ('__init__.py', '__main__.py', 'cli.py', 'confeditor.py', 'config.py',
                 'database.py', 'driver.py', 'faults.py', 'protocol.py', 'requester.py',
                 'responder.py', 'transport.py', 'verify.py')

# The Replication skin, installed to WEEWX_ROOT/skins/Replication (WeeWX's place for an
# extension's skin); SKIN_FILES serves uninstall, where the skin is not next to this file.
SKIN = 'Replication'
SKIN_FILES = ('index.html.tmpl', 'skin.conf')
REPORT = 'Replication'

HERE = os.path.dirname(os.path.abspath(__file__))

# The stanza added to weewx.conf.  Comments go *above* the line they
# describe: the WeeWX merge keeps those but drops inline (end-of-line) ones.
STANZA = """\
[Replicator]
    # MQTTReplicate copies WeeWX databases from a primary station to
    # secondary stations through an MQTT broker.  Both roles are disabled
    # until you enable one; see the documentation (docs/install.md and
    # docs/configuration.md).

    # The driver used when this station is a secondary.  Select it with:
    #     weectl station reconfigure --driver=user.mqttreplicate
    driver = user.mqttreplicate

    # The MQTT broker.  Connection options set here (host, port, username,
    # password, clientid, [[[tls]]], ...) are inherited by [[Requester]] and
    # [[Responder]]; a value set in one of those sections wins.
    host = localhost
    port = 1883

    # The secondary role: a WeeWX driver that fetches the primary's records.
    [[Requester]]
        # Set to true by 'weectl station reconfigure --driver=user.mqttreplicate'.
        enable = false

        # An instance name: it must match the primary's [[Responder]] instance.
        [[[weewx]]]
            # A data binding of the primary.  Exactly one binding may be the
            # main one: its records go through this station's engine.
            [[[[wx_binding]]]]
                type = main
                # The binding on this station where the records are stored.
                secondary_data_binding = wx_binding

    # The primary role: a WeeWX service that publishes this station's records
    # and answers the secondaries' catch-up requests.
    [[Responder]]
        # Set to true on the primary.
        enable = false

        # This primary's instance name.
        [[[weewx]]]
            # A data binding to replicate; the main one is usually wx_binding.
            [[[[wx_binding]]]]
                type = main
"""


def _read_text(path):
    try:
        with open(path, encoding='utf-8') as fd:
            return fd.read()
    except OSError:
        return None


def _package_dir():
    """The directory holding the package's modules, or None.

    At install time it is bin/user/mqttreplicate next to this file.  At
    list / uninstall time this file is USER_ROOT/installer/MQTTReplicate/
    install.py, and the installed package is USER_ROOT/mqttreplicate.
    """
    source = os.path.join(HERE, 'bin', 'user', PACKAGE)
    if os.path.isdir(source):
        return source
    installed = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir, PACKAGE))
    if os.path.isdir(installed):
        return installed
    return None


def _is_source_tree():
    return os.path.isdir(os.path.join(HERE, 'bin', 'user', PACKAGE))


def read_version():
    """The package's VERSION, read as text (the package cannot be imported here)."""
    package_dir = _package_dir()
    if package_dir:
        text = _read_text(os.path.join(package_dir, '__init__.py'))
        if text:
            match = re.search(r'''^VERSION\s*=\s*['"]([^'"]+)['"]''', text, re.MULTILINE)
            if match:
                return match.group(1)
    return FALLBACK_VERSION


def package_files():
    """The package's files, as paths relative to the extension directory.

    Installing copies them to WEEWX_ROOT/bin/user/mqttreplicate/; uninstalling
    deletes 'name.py*' for each of them.
    """
    package_dir = _package_dir()
    rel = 'bin/user/%s/' % PACKAGE
    if _is_source_tree():
        names = [os.path.basename(p) for p in glob.glob(os.path.join(package_dir, '*.py'))]
        return sorted(rel + name for name in names)

    # Uninstall (or list): name what is installed, so that nothing is left
    # behind.  Compiled files in __pycache__ are named with their last
    # character dropped ('x.cpython-311.py'), because the uninstaller deletes
    # 'name.py*' for a name ending in 'py'; removing them lets the uninstaller
    # remove the then empty package directory too.
    names = set(KNOWN_MODULES)
    cached = []
    if package_dir:
        names.update(os.path.basename(p) for p in glob.glob(os.path.join(package_dir, '*.py')))
        for path in glob.glob(os.path.join(package_dir, '__pycache__', '*.pyc')):
            cached.append(rel + '__pycache__/' + os.path.basename(path)[:-1])
    return sorted(rel + name for name in names) + sorted(cached)


# The report, merged into [StdReport]; WeeWX puts the station's HTML_ROOT in front of
# HTML_ROOT when it installs.
REPORT_SECTION = """\
[StdReport]
    # MQTTReplicate's page: how this station's replication stands (the
    # secondaries of a primary, the bindings of a secondary).  It reads only
    # the status file the extension writes beside the databases.
    [[Replication]]
        skin = Replication
        HTML_ROOT = replication
        enable = true
"""


def skin_files():
    """The skin's files, relative to the extension directory."""
    rel = 'skins/%s/' % SKIN
    source = os.path.join(HERE, 'skins', SKIN)
    if os.path.isdir(source):
        names = [name for name in os.listdir(source)
                 if os.path.isfile(os.path.join(source, name))]
    elif _is_source_tree():
        names = []            # an extension directory without the skin: nothing to copy
    else:
        names = SKIN_FILES    # uninstall: what the skin is known to hold
    return sorted(rel + name for name in names)


def make_config():
    """The [Replicator] stanza and the report as a ConfigObj, so that comments survive the
    merge."""
    config = configobj.ConfigObj(io.StringIO(STANZA), encoding='utf-8', interpolation=False)
    # configobj files a comment that starts a file as the file's initial
    # comment; the merge only carries comments attached to a section.
    config.initial_comment = []
    config.comments[STANZA_NAME] = ['', '#' * 78, '']
    config.merge(configobj.ConfigObj(io.StringIO(REPORT_SECTION), encoding='utf-8',
                                     interpolation=False))
    return config


def loader():
    return MQTTReplicateInstaller()


class MQTTReplicateInstaller(ExtensionInstaller):
    def __init__(self):
        super().__init__(
            version=read_version(),
            name=NAME,
            description='Replicates WeeWX databases from a primary station to '
                        'secondary stations over MQTT v5.',
            author='MQTTReplicate contributors',
            author_email='',
            # A list, not a string: uninstall tests 'service in restful_services',
            # which on a string would match substrings.
            restful_services=['user.mqttreplicate.MQTTResponder'],
            config=make_config(),
            files=[('bin/user', package_files()),
                   ('skins/%s' % SKIN, skin_files())],
        )

    def configure(self, engine):
        """Called by 'weectl extension install' before the stanza is merged.

        On a station that has the earlier extension's [MQTTReplicate] stanza and no
        [Replicator], the stanza is left out (the report is not): the station keeps
        [MQTTReplicate] as it is.  Returns False: nothing in weewx.conf is changed here.
        """
        config_dict = engine.config_dict
        if LEGACY_STANZA_NAME in config_dict and STANZA_NAME not in config_dict:
            self['config'].pop(STANZA_NAME, None)
            engine.printer.out("This station has the [%s] stanza of the earlier extension: "
                               "kept as it is, no [%s] stanza added."
                               % (LEGACY_STANZA_NAME, STANZA_NAME))
        elif LEGACY_STANZA_NAME in config_dict:
            engine.printer.out("Warning: weewx.conf has both [%s] and [%s]; MQTTReplicate "
                               "will not start until one of them is removed."
                               % (STANZA_NAME, LEGACY_STANZA_NAME))
        return False
