"""The shared pieces of `theories.base`: number formats for summaries, the fit-cache key digest."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from theories.base import LABEL, dec, field_unit, field_units, fingerprint, num, pct
from theories.candles import HOUR_MS, Candles

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS


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


def _digest_of_arrays(c: Candles) -> str:
    """The plain digest: every column's bytes, hashed afresh."""
    h = hashlib.blake2b(digest_size=12)
    for arr in (c.time, c.open, c.high, c.low, c.close, c.volume):
        h.update(arr.tobytes())
    return h.hexdigest()


def _candles(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return Candles(T0 + HOUR_MS * np.arange(n), open_, np.maximum(open_, close) * 1.001,
                   np.minimum(open_, close) * 0.999, close, rng.uniform(1, 5, n), interval_ms=HOUR_MS)


def test_fingerprint_of_every_view_equals_a_fresh_digest_of_its_candles():
    full = _candles(400, 1)
    twin = _candles(400, 1)  # equal candles, another object
    other = _candles(400, 2)
    cuts = [full, full.tail(50), full.closed_by(T0 + 200 * HOUR_MS), full.closed_by(T0 + 300 * HOUR_MS).tail(50),
            full.tail(120).tail(50), full.closed_by(T0 + 201 * HOUR_MS).tail(50), twin.tail(50), other.tail(50),
            full.tail(0)]
    for _ in range(2):  # the second pass answers from the memo
        for c in cuts:
            assert fingerprint(c) == _digest_of_arrays(c)
    # same length, different positions or data: different digests; equal candles: equal digests
    assert len({fingerprint(c) for c in (full.tail(50), cuts[3], cuts[5], other.tail(50))}) == 4
    assert fingerprint(twin.tail(50)) == fingerprint(full.tail(50))


def test_fingerprint_origin_tracks_nested_cuts():
    full = _candles(300, 3)
    c = full.closed_by(T0 + 250 * HOUR_MS).tail(100).tail(30)
    root, start = c.origin
    assert root is full and start == 250 - 30
    np.testing.assert_array_equal(c.close, full.close[start:start + 30])


def test_field_units_lists_every_result_field_with_its_declared_unit():
    from agent.snapshot import ATTACHED_RESULTS
    from theories.registry import THEORIES

    for model in [t.result for t in THEORIES.values()] + list(ATTACHED_RESULTS.values()):
        assert field_units(model) == tuple((name, field_unit(model, name)) for name in model.model_fields)
    assert ("label", LABEL) in field_units(THEORIES["hurst"].result)


def test_theory_parameters_are_validated_once_per_mapping_and_again_when_it_changes():
    from evals.variants import resolve_theories
    from theories.registry import THEORIES

    theory = THEORIES["autocorr"]
    full = resolve_theories(["autocorr"])["autocorr"]  # the full parameters an evals replay passes every run
    first = theory._params(full)
    assert first == theory.params.model_validate(full)
    assert theory._params(full) is first  # remembered
    assert theory._params(dict(full)) == first  # an equal mapping, another object: validated, the same value
    full["report_lags"] = first.report_lags + 1  # the same mapping, edited: validated again
    assert theory._params(full).report_lags == first.report_lags + 1
    with pytest.raises(ValueError):
        theory._params({**full, "report_lags": -5})  # invalid: refused every time, never remembered
    with pytest.raises(ValueError):
        theory._params({**full, "report_lags": -5})
