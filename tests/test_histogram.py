from agent.histogram import LatencyHistogram


def test_values_land_at_or_below_their_bound_and_accumulate() -> None:
    histogram = LatencyHistogram((0.1, 0.5))
    for value in (0.05, 0.1, 0.3, 2.0):
        histogram.observe(value)
    assert histogram.cumulative() == ((0.1, 2), (0.5, 3), (float("inf"), 4))
    assert histogram.count == 4
    assert abs(histogram.sum - 2.45) < 1e-9
