"""The private MariaDB server of the tests (tests/support/mariadb.py)."""

import pytest
import weedb
import weewx.manager

from tests.support.broker import port_open

pytestmark = pytest.mark.integration


def test_private_server_with_its_own_user(mariadb):
    assert mariadb.running and mariadb.port not in (0, 3306)
    assert mariadb.host == '127.0.0.1' and port_open(mariadb.host, mariadb.port)
    name = mariadb.new_database()
    assert name != mariadb.new_database()
    db_dict = dict(mariadb.type_options(), database_name=name)
    # weedb over TCP with the fixture's user and password: the database is created
    with weewx.manager.Manager.open_with_create(db_dict, 'archive', [
            ('dateTime', 'INTEGER NOT NULL UNIQUE PRIMARY KEY'), ('usUnits', 'INTEGER NOT NULL'),
            ('interval', 'INTEGER NOT NULL')]) as manager:
        manager.addRecord({'dateTime': 1, 'usUnits': 1, 'interval': 5}, log_success=False)
        assert manager.lastGoodStamp() == 1
    with pytest.raises(weedb.BadPasswordError):
        weedb.connect(dict(db_dict, password='wrong'))
