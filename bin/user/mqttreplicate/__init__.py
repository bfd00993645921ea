"""MQTTReplicate: replicate WeeWX databases from a primary station to secondaries over MQTT v5.

    driver = user.mqttreplicate                    the requester (a WeeWX driver)
    user.mqttreplicate.MQTTResponder               the responder (a WeeWX service)
    python3 -m user.mqttreplicate --help           the command line
"""

VERSION = '0.1.0'

DRIVER_NAME = 'Replicator'       # the stanza's name, and station_type of a secondary
DRIVER_VERSION = VERSION

from .driver import loader, MQTTRequesterDriver      # noqa: E402
from .confeditor import confeditor_loader           # noqa: E402
from .responder import MQTTResponder                # noqa: E402

__all__ = ['VERSION', 'DRIVER_NAME', 'DRIVER_VERSION', 'loader', 'confeditor_loader',
           'MQTTRequesterDriver', 'MQTTResponder']
