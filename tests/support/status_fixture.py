"""Status files for the tests of their readers (the Replication report).

    status = primary_status(now)                 # a primary with two secondaries
    status = secondary_status(now)               # a secondary replicating two bindings
    write_status(station_root / 'archive', status)

The documents follow the status file's format 1 (see bin/user/mqttreplicate/statusread.py);
tests change what they need with plain dict edits.
"""

import json
import os
from pathlib import Path

FILE_NAME = 'mqttreplicate-status.json'


def primary_status(now, *, location='Test primary', timezone='UTC', interval=300):
    """A primary: one secondary live, one offline, with verification results."""
    return {
        'format': 1, 'written': now - 5,
        'station': {'location': location, 'timezone': timezone, 'archive_interval': interval},
        'responder': {
            'state': 'online', 'since': now - 7200, 'version': '0.1.0',
            'clientid': 'mqttreplicate-responder-primary', 'last_error': None,
            'bindings': {'weewx/wx_binding': {'newest': now - 60}},
            'secondaries': {
                'mqttreplicate-requester-attic': {
                    'state': 'live', 'offline_since': None, 'last_contact': now - 30,
                    'bindings': {'weewx/wx_binding': {
                        'newest': now - 60, 'lag': 0, 'lag_records': 0,
                        'last_ack': now - 55, 'verified': now - 3600,
                        'verify_result': 'in sync'}}},
                'mqttreplicate-requester-cellar': {
                    'state': 'offline', 'offline_since': now - 5400, 'last_contact': now - 5400,
                    'bindings': {'weewx/wx_binding': {
                        'newest': now - 5700, 'lag': 5640, 'lag_records': 19,
                        'last_ack': now - 5400, 'verified': None, 'verify_result': None}}},
            }},
        'requester': None,
    }


def secondary_status(now, *, location='Test secondary', timezone='UTC', interval=300):
    """A secondary: the main binding live, a second one catching up after repairs."""
    return {
        'format': 1, 'written': now - 5,
        'station': {'location': location, 'timezone': timezone, 'archive_interval': interval},
        'responder': None,
        'requester': {
            'state': 'online', 'since': now - 3600, 'version': '0.1.0',
            'clientid': 'mqttreplicate-requester-attic', 'last_error': None,
            'primary': {'state': 'online', 'offline_since': None},
            'bindings': {
                'weewx/wx_binding': {
                    'state': 'live', 'newest': now - 60, 'primary_newest': now - 60,
                    'lag': 0, 'lag_records': 0, 'last_contact': now - 60,
                    'verified': now - 1800, 'verify_result': 'in sync', 'repaired_days': 0,
                    'repaired_records': 0, 'rejected': 0, 'summaries': 'copied'},
                'weewx/aq_binding': {
                    'state': 'catching up', 'newest': now - 86400, 'primary_newest': now - 60,
                    'lag': 86340, 'lag_records': 288, 'last_contact': now - 2,
                    'verified': now - 90000, 'verify_result': 'repaired', 'repaired_days': 2,
                    'repaired_records': 310, 'rejected': 3, 'summaries': 'rebuilt'},
            }},
    }


def write_status(directory, status):
    """Write status (a dict, or raw text) as the status file in directory, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    tmp = path.with_name(path.name + '.tmp')
    text = status if isinstance(status, str) else json.dumps(status, indent=1)
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)
    return path
