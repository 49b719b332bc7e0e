"""The matcher curve's extrapolated crossing, against hand-computed values."""

import math

import pandas as pd

from icdlib.pipeline.curves import HORIZON, overtaking_budget


def _curve(points, target):
    return pd.DataFrame([{"arm": "m", "pairs": p, "uAP": u, "descriptor_uAP": target} for p, u in points])


def test_crossing_is_the_log_linear_extension_of_the_budgets():
    # uAP rises 0.1 per tenfold pairs from 0.1 at 1e2: 0.5 is reached at 1e6
    c = _curve([(100, 0.1), (1000, 0.2), (10000, 0.3)], 0.5)
    assert math.isclose(overtaking_budget(c, "m"), 1e6, rel_tol=1e-9)


def test_the_trend_is_fitted_to_every_budget_not_the_last_two():
    # a dip at the last budget: the last two fall, the least-squares line over all four rises
    points = [(1000, 0.010), (2000, 0.015), (4000, 0.019), (8000, 0.016)]
    got = overtaking_budget(_curve(points, 0.03), "m")
    # the fit by hand: slope and intercept of uAP on ln(pairs) from the normal equations
    xs = [math.log(p) for p, _ in points]
    ys = [u for _, u in points]
    n, sx, sy = len(xs), sum(xs), sum(ys)
    sxx, sxy = sum(x * x for x in xs), sum(x * y for x, y in zip(xs, ys))
    b = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    a = (sy - b * sx) / n
    assert b > 0 and math.isclose(got, math.exp((0.03 - a) / b), rel_tol=1e-9)
    # pairs at step 0 (the start, before any training) are not a budget
    assert overtaking_budget(_curve([(0, 0.5)] + points, 0.03), "m") == got


def test_no_crossing_when_reached_flat_falling_or_past_the_horizon():
    assert overtaking_budget(_curve([(10, 0.1), (100, 0.6)], 0.5), "m") is None  # already above
    assert overtaking_budget(_curve([(10, 0.3), (100, 0.3)], 0.5), "m") is None  # flat
    assert overtaking_budget(_curve([(10, 0.3), (100, 0.2)], 0.5), "m") is None  # falling
    # +1e-4 per tenfold from 0.03: the crossing is ~10^1300 pairs, far past the horizon (no overflow)
    assert overtaking_budget(_curve([(8, 0.0300), (80, 0.0301)], 0.16), "m") is None
    assert HORIZON < 1e300
