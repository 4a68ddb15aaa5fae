"""Tests for raylm.reporting.markdown's numbers: intervals, differences and the sign of a value that rounds to zero."""

import math

from raylm.reporting.markdown import MISSING, Difference, Interval, fmt, number


def test_a_value_that_rounds_to_zero_has_no_minus():
    assert number(-0.00003, "+.4f") == "+0.0000"
    assert number(-0.00003, ".4f") == "0.0000"
    assert number(-0.4, ",.0f") == "0"
    assert number(-0.00003, ">9.4f") == "   0.0000"  # after fill and align
    assert number(-0.5, "+.4f") == "-0.5000"  # a real negative keeps it
    assert number(-1e-9, ".2e") == "-1.00e-09"  # in e notation -1e-9 does not round to zero


def test_a_difference_and_its_interval_read_as_the_report_prints_them():
    assert Difference(-0.00003, -0.001, 0.00004).text("+.4f") == "+0.0000 [-0.0010, +0.0000] n.s."
    assert Difference(0.0102, 0.0078, 0.0124).text("+.4f") == "+0.0102 [+0.0078, +0.0124]"
    assert Interval(0.0918, 0.0871, math.nan).text(".4f") == "0.0918"  # no interval without both ends
    assert fmt(math.nan, ".4f") == MISSING
    assert fmt(-0.00001, ".4f") == "0.0000"
