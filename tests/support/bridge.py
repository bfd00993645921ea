"""Two private brokers joined by the Mosquitto MQTT v5 bridge of docs/topologies.md.

    bridged = BridgedBrokers(make_broker)         # the page's bridge, run as documented
    bridged.station                               # the primary's broker (carries the bridge)
    bridged.internet                              # the secondaries' broker (TLS, passwords)
    bridged.proxy                                 # the link between them (a TcpProxy)
    bridged.cut(); bridged.restore()              # the internet link down, then up again
    bridged.wait_linked(mark)                     # the bridge (re)connected since mark

The bridge configuration is the fenced block between the bridge-example markers of
docs/topologies.md, with the documented address and CA file replaced by the proxy in front
of the internet broker's TLS listener and that broker's test CA; everything else (protocol
version, session, client ids, credentials, topic lines) is the page's text as it stands. The
internet broker's users are the bridge's (user and password read from the block) and the
documented secondary, ``secondary1``.
"""

import re
import time

from tests.support.proxy import TcpProxy
from tests.support.topologies import documented_block

DOC_ADDRESS = 'address mqtt.example.net:8883'
DOC_CAFILE = 'bridge_cafile /etc/mosquitto/certs/internet-ca.pem'
SECONDARY_USER = 'secondary1'
SECONDARY_PASSWORD = 'secondary1-secret'


def documented_bridge():
    """The bridge configuration of docs/topologies.md: the fenced block between the
    bridge-example markers."""
    return documented_block('bridge-example')


def bridge_options(text):
    """{option: value} of a bridge configuration (the first value of each option; comments
    and blank lines left out); 'topic' maps to the list of its lines' values."""
    options = {'topic': []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        name, _, value = line.partition(' ')
        if name == 'topic':
            options['topic'].append(value.strip())
        else:
            options.setdefault(name, value.strip())
    return options


class BridgedBrokers:
    """The station's broker, bridged to the internet broker through a TcpProxy.

    make_broker: the fixture (brokers stopped at the test's end). Both brokers keep their
    state on disk (persistence), as an installed Mosquitto does. The proxy is stopped by
    stop() (call it at the end; the brokers are the fixture's)."""

    def __init__(self, make_broker, text=None, *, station_options=None):
        self.text = text if text is not None else documented_bridge()
        for line in (DOC_ADDRESS, DOC_CAFILE):
            assert line in self.text.splitlines(), \
                'the documented bridge no longer has the line %r the test replaces' % line
        self.options = bridge_options(self.text)
        self.name = self.options['connection']
        self.remote_clientid = self.options['remote_clientid']
        self.users = {self.options['remote_username']: self.options['remote_password'],
                      SECONDARY_USER: SECONDARY_PASSWORD}
        self.internet = make_broker(tls=True, users=self.users, persistence=True)
        self.proxy = TcpProxy(self.internet.host, self.internet.tls_port)
        self.config = self.text.replace(
            DOC_ADDRESS, 'address %s:%d' % (self.proxy.host, self.proxy.port)).replace(
            DOC_CAFILE, 'bridge_cafile %s' % self.internet.ca_certs)
        mark = self.mark()
        self.station = make_broker(persistence=True, bridge=self.config,
                                   **(station_options or {}))
        self.wait_linked(mark)

    # -- the link ------------------------------------------------------------------------------

    def mark(self):
        """A point in the internet broker's log: pass it to wait_linked()."""
        return self.internet.log_size()

    def linked_since(self, mark):
        """True once the bridge connected to the internet broker and its subscriptions there
        were acknowledged (messages published there from then on cross it), since mark."""
        return bool(re.search(r'Sending SUBACK to %s\b' % re.escape(self.remote_clientid),
                              self.internet._log_since(mark)))

    def wait_linked(self, mark, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not self.linked_since(mark):
            if time.monotonic() > deadline:
                raise AssertionError(
                    'the bridge did not connect within %.0f s:\nstation broker:\n%s\n'
                    'internet broker:\n%s' % (timeout, self.station._tail(lines=20),
                                              self.internet._tail(mark, lines=20)))
            time.sleep(0.05)

    def cut(self):
        """The internet link goes down and stays down (the bridge's reconnections refused)."""
        self.proxy.refuse(True)
        self.proxy.cut()

    def cut_after(self, nbytes):
        """Arm: the link goes down once nbytes more went from the station to the internet
        broker, and stays down (the bridge's reconnections refused)."""
        self.proxy.refuse(True)
        self.proxy.cut_after(nbytes, 'up')

    def restore(self, timeout=20.0):
        """The link comes back; wait until the bridge is connected again."""
        mark = self.mark()
        self.proxy.refuse(False)
        self.wait_linked(mark, timeout)

    def restart_internet(self, timeout=20.0):
        """Stop the internet broker (clean shutdown, persistence saved), start it again on its
        ports, and wait for the bridge to reconnect."""
        self.internet.stop()
        mark = self.mark()
        self.internet.start()
        self.wait_linked(mark, timeout)

    def restart_station(self, timeout=20.0):
        """Stop the station's broker and start it again; wait for its bridge."""
        self.station.stop()
        mark = self.mark()
        self.station.start()
        self.wait_linked(mark, timeout)

    def stop(self):
        self.proxy.stop()

    def secondary_login(self):
        """MqttClient options of the documented secondary on the internet broker."""
        return {'username': SECONDARY_USER, 'password': SECONDARY_PASSWORD}
