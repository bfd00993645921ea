"""Fixtures of the in-process integration tests (see harness.py)."""

import logging

import pytest

from tests.integration.harness import PACKAGE_LOGGER, Rig, StationTemplates


@pytest.fixture(scope='session')
def station_templates(tmp_path_factory):
    """Stations to copy (see StationTemplates)."""
    return StationTemplates(tmp_path_factory.mktemp('station-templates'))


@pytest.fixture
def rig(stations, station_templates, tmp_path, caplog, make_broker):
    """A Rig: stations, an in-process responder and requester; everything stopped at the end
    (before the brokers: the rig depends on make_broker, so it is torn down first).

    Log records of user.mqttreplicate from INFO up are captured (caplog)."""
    caplog.set_level(logging.INFO, logger=PACKAGE_LOGGER)
    rig = Rig(stations, station_templates, tmp_path)
    yield rig
    rig.cleanup()
