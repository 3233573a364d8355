"""The shared pieces of `theories.base`: number formats for summaries, the fit-cache key digest."""

from __future__ import annotations

import re

import numpy as np
import pytest

from theories.base import dec, num, pct


def _regex_form(text: str) -> str:
    """The specification of the leading-zero rule, as a regex: an optional sign, then "0." -> "."."""
    return re.sub(r"^([+-]?)0\.", r"\1.", text)


def _num_reference(x: float, sig: int, sign: bool) -> str:
    plus = "+" if sign else ""
    if not np.isfinite(x):
        return str(x)
    if abs(x) >= 10 ** (sig - 1):
        return _regex_form(f"{x:{plus}.0f}")
    text = f"{x:{plus}.{sig}g}"
    if "e" in text:
        mant, _, exp = text.partition("e")
        text = f"{mant}e{int(exp)}"
    return _regex_form(text)


def _dec_reference(x: float, places: int, sign: bool) -> str:
    if not np.isfinite(x):
        return str(x)
    return _regex_form(f"{round(x, places) + 0.0:{'+' if sign else ''}.{places}f}")


def _values() -> list[float]:
    rng = np.random.default_rng(7)
    mags = 10.0 ** rng.uniform(-9, 7, 3000)
    signs = rng.choice([-1.0, 1.0], 3000)
    edges = [0.0, -0.0, 0.5, -0.5, 0.999, 0.9999, 0.0004, -0.004999, 0.005, 0.995, 1.0, 9.9995, 99.95, 100.0,
             1e-5, -1e-12, 123456.7, float("inf"), float("-inf"), float("nan")]
    return edges + list(signs * mags)


def test_number_formats_match_the_regex_specification_of_the_leading_zero_rule():
    for x in _values():
        for sig in (1, 2, 3, 4):
            for sign in (False, True):
                assert num(x, sig, sign) == _num_reference(x, sig, sign), (x, sig, sign)
        for places in (0, 1, 2, 3):
            for sign in (False, True):
                assert dec(x, places, sign) == _dec_reference(x, places, sign), (x, places, sign)


@pytest.mark.parametrize(("x", "text"), [(0.85, ".85"), (-0.5, "-.5"), (95596.2, "95596"), (4e-5, "4e-5")])
def test_number_formats_known_answers(x, text):
    assert num(x) == text


def test_dec_and_pct_known_answers():
    assert dec(0.05) == ".05" and dec(-0.06, sign=True) == "-.06"
    assert dec(-0.001) == ".00" and dec(0.3, sign=True) == "+.30"
    assert pct(0.0027) == ".27%" and pct(0.34) == "34%" and pct(None) == "n/a"
