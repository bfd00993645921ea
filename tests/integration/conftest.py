"""Fixtures of the in-process integration tests (see harness.py)."""

import logging

import pytest

from tests.integration.harness import PACKAGE_LOGGER, Rig


@pytest.fixture
def rig(stations, caplog, make_broker):
    """A Rig: stations, an in-process responder and requester; everything stopped at the end
    (before the brokers: the rig depends on make_broker, so it is torn down first).

    Log records of user.mqttreplicate from INFO up are captured (caplog)."""
    caplog.set_level(logging.INFO, logger=PACKAGE_LOGGER)
    rig = Rig(stations)
    yield rig
    rig.cleanup()
