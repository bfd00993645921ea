"""The numbers a MySQL store spells itself (sqlbulk._number_literals): exactly what PyMySQL
would have sent for them, or nothing (the driver then escapes them as before)."""

import math

import pymysql.converters
import pytest
from hypothesis import given
from hypothesis import strategies as st

from user.mqttreplicate import sqlbulk


def driver(row):
    """The row as PyMySQL's own escaping spells it."""
    return '(%s)' % ','.join(pymysql.converters.escape_item(v, 'utf8') for v in row)


HARD = [0.0, -0.0, 0.1 + 0.2, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, -2.5, 123456789.0,
        30.040040292733185, 1 / 3]


def test_rows_of_numbers_and_nulls_are_spelled_as_the_driver_spells_them():
    rows = [(1699920300 + i, 1, 5, HARD[i], None if i % 2 else -HARD[i], 2 ** 63 - 1,
             -2 ** 63, i if i % 3 else None) for i in range(len(HARD))]
    assert sqlbulk._number_literals(rows) == [driver(row) for row in rows]
    # an integer no column holds is spelled as the driver spells it too (the server refuses
    # it as it did), also among floats
    rows = [(1, 2.5), (2, 10 ** 400)]
    assert sqlbulk._number_literals(rows) == [driver(row) for row in rows]


@given(st.lists(st.tuples(st.integers(-2 ** 63, 2 ** 63 - 1),
                          st.floats(allow_nan=False, allow_infinity=False) | st.none(),
                          st.one_of(st.none(), st.integers(-10, 10),
                                    st.floats(allow_nan=False, allow_infinity=False))),
                min_size=1, max_size=20))
def test_any_numbers_are_spelled_as_the_driver_spells_them(rows):
    assert sqlbulk._number_literals(rows) == [driver(row) for row in rows]


@pytest.mark.parametrize('value', ['text', b'bytes', True, math.inf, -math.inf, math.nan,
                                   [1]])
def test_anything_but_numbers_is_left_to_the_driver(value):
    assert sqlbulk._number_literals([(1, 2.5), (2, value)]) is None
