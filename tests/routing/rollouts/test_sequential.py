"""The mixture martingale pinned to hand-computed values, and its error rates under repeated looks."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.stats import beta

from routing.rollouts.sequential import (
    Side,
    centred_concentration,
    concentration,
    log_e_ratio,
    log_e_value,
    log_e_within,
    log_e_worse,
    ratio_bounds,
    ratio_of,
    share_of,
)


def test_a_uniform_prior_gives_the_hand_computed_e_value():
    # k = 2 (the floor) at theta0 = 0.5 is Beta(1, 1) truncated to (0.5, 1), density 2.
    # Three canary events, none on the baseline: e = int_0.5^1 2 t^3 dt / 0.5^3 = 2 (15/64) 8 = 3.75.
    assert math.exp(log_e_value(3, 0, 0.5, Side.ABOVE, ratio_sd=10)) == pytest.approx(3.75)


# log posterior odds of savvi 0.3.1's Multinomial (a published implementation of Lindon & Malek's
# Dirichlet-multinomial test), fed the same events one at a time with theta_0 = (theta0, 1 - theta0), k as given.
SAVVI = [
    (14, 9, 412 / 4102, 10.067963796142816, 12.456918207805696),
    (3, 0, 0.5, 2.0, 0.6931471805599451),
    (7, 20, 0.2, 5.25, -0.8220617852788842),
    (40, 60, 0.1, 10.11111111111111, 27.261607564209598),
    (0, 200, 0.1, 10.11111111111111, 17.903315648776623),
    (5, 5, 0.5, 100.0, -0.047882352269387515),
]


@pytest.mark.parametrize(("hits", "misses", "theta0", "k", "log_odds"), SAVVI)
def test_the_untruncated_mixture_matches_a_published_implementation(hits, misses, theta0, k, log_odds):
    assert log_e_value(hits, misses, theta0, Side.BOTH, k=k) == pytest.approx(log_odds, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("hits", "misses", "theta0", "side"), [
    (7, 20, 0.2, Side.ABOVE), (7, 20, 0.2, Side.BELOW), (1, 40, 0.1, Side.BELOW), (30, 5, 0.5, Side.ABOVE),
])
def test_the_closed_form_matches_numeric_integration(hits, misses, theta0, side):
    k = concentration(theta0)
    a, b = k * theta0, k * (1 - theta0)
    lo, hi = (theta0, 1) if side == Side.ABOVE else (0, theta0)
    prior_mass = beta.sf(theta0, a, b) if side == Side.ABOVE else beta.cdf(theta0, a, b)

    def ratio(t):
        return (t / theta0) ** hits * ((1 - t) / (1 - theta0)) ** misses * beta.pdf(t, a, b)

    expected = quad(ratio, lo, hi, limit=200)[0] / prior_mass
    assert math.exp(log_e_value(hits, misses, theta0, side)) == pytest.approx(expected, rel=1e-6)


def test_the_worse_test_centres_its_prior_on_a_doubled_rate():
    # At an even split a doubled rate gives the canary 2/3 of the events; share_of's slope there is
    # 0.25 / 1.5^2 = 1/9, so a ratio sd of 1 is a theta sd of 1/9: k = (2/9) / (1/81) - 1 = 17.
    assert share_of(2.0, 0.5) == pytest.approx(2 / 3)
    assert centred_concentration(0.5, 2.0) == pytest.approx(17.0)
    assert centred_concentration(0.1, 1.0) == pytest.approx(concentration(0.1))  # centred on no change: as before


@pytest.mark.parametrize(("hits", "misses", "theta0"), [(14, 9, 412 / 4102), (30, 10, 0.5), (3, 40, 0.1), (0, 5, 0.3)])
def test_the_worse_test_matches_numeric_integration(hits, misses, theta0):
    k = centred_concentration(theta0, 2.0)
    centre = share_of(2.0, theta0)
    a, b = k * centre, k * (1 - centre)

    def ratio(t):
        return (t / theta0) ** hits * ((1 - t) / (1 - theta0)) ** misses * beta.pdf(t, a, b)

    expected = quad(ratio, theta0, 1, limit=200)[0] / beta.sf(theta0, a, b)
    assert math.exp(log_e_worse(hits, misses, theta0)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("theta", [0.1, 0.07])
def test_the_worse_test_keeps_false_alarms_under_alpha_at_every_look(theta):
    rng = random.Random(13)
    alarms = 0
    for _ in range(600):
        hits = 0
        for n in range(1, 201):
            hits += rng.random() < theta
            if log_e_worse(hits, n - hits, 0.1) >= math.log(1 / 0.05):
                alarms += 1
                break
    assert alarms / 600 < 0.05


def test_no_events_are_no_evidence():
    assert log_e_value(0, 0, 0.1, Side.ABOVE) == pytest.approx(0)
    assert ratio_bounds(0, 0, 0.1, 0.01) == (0.0, math.inf)


def test_share_and_ratio_are_inverse():
    assert share_of(1.0, 0.1) == pytest.approx(0.1)
    assert share_of(3.0, 0.5) == pytest.approx(0.75)
    assert ratio_of(share_of(2.5, 0.07), 0.07) == pytest.approx(2.5)


def _ever_rejects(rng, theta, theta0, events, alpha, side=Side.ABOVE):
    """Look after every event; return the event index of the first rejection, or None."""
    hits = 0
    for n in range(1, events + 1):
        hits += rng.random() < theta
        if log_e_value(hits, n - hits, theta0, side) >= math.log(1 / alpha):
            return n
    return None


@pytest.mark.parametrize("theta", [0.1, 0.07])
def test_looking_after_every_event_keeps_false_alarms_under_alpha(theta):
    # Under the null (theta = 0.1) and inside it (0.07, a better canary), 600 streams of
    # 200 events, tested after each one: Ville's inequality bounds the share that ever rejects.
    rng = random.Random(11)
    alarms = sum(_ever_rejects(rng, theta, 0.1, 200, alpha=0.05) is not None for _ in range(600))
    assert alarms / 600 < 0.05


def test_a_canary_taking_three_times_its_share_of_errors_is_caught_quickly():
    rng = random.Random(5)
    times = [_ever_rejects(rng, share_of(3.0, 0.1), 0.1, 300, alpha=0.005) for _ in range(200)]
    caught = [t for t in times if t is not None]
    assert len(caught) / len(times) >= 0.95
    assert sorted(caught)[len(caught) // 2] < 120


def test_only_regressions_build_evidence_against_the_canary():
    # The canary gets none of 200 events although it has a tenth of the traffic: better, not worse.
    assert log_e_ratio(0, 200, 0.1, 1.0, Side.ABOVE) < 0
    assert log_e_ratio(0, 200, 0.1, 1.0, Side.BELOW) > math.log(1000)


def test_the_confidence_sequence_holds_the_true_ratio_and_narrows():
    rng = random.Random(3)
    theta = share_of(2.0, 0.2)
    hits = sum(rng.random() < theta for _ in range(400))
    low, high = ratio_bounds(hits, 400 - hits, 0.2, 0.005)
    assert low < 2.0 < high
    small_low, small_high = ratio_bounds(hits // 4, (400 - hits) // 4, 0.2, 0.005)
    assert small_low < low and high < small_high


@given(st.integers(0, 300), st.integers(1, 300), st.floats(0.01, 0.99))
def test_moving_an_event_to_the_canary_never_weakens_the_case_against_it(hits, misses, theta0):
    more = log_e_value(hits + 1, misses - 1, theta0, Side.ABOVE)
    assert more >= log_e_value(hits, misses, theta0, Side.ABOVE) - 1e-9
    assert log_e_value(hits + 1, misses - 1, theta0, Side.BELOW) <= log_e_value(hits, misses, theta0, Side.BELOW) + 1e-9


@pytest.mark.parametrize(("hits", "misses", "share", "boundary"), [(14, 9, 0.1, 1.5), (3, 40, 0.25, 2.0)])
def test_the_worse_test_at_a_boundary_matches_numeric_integration(hits, misses, share, boundary):
    # H0: the canary's rate is at most `boundary` x the baseline's; the prior sits at twice the boundary.
    theta0 = share_of(boundary, share)
    k = centred_concentration(theta0, 2.0)
    centre = share_of(2.0 * boundary, share)
    a, b = k * centre, k * (1 - centre)

    def ratio(t):
        return (t / theta0) ** hits * ((1 - t) / (1 - theta0)) ** misses * beta.pdf(t, a, b)

    expected = quad(ratio, theta0, 1, limit=200)[0] / beta.sf(theta0, a, b)
    assert math.exp(log_e_worse(hits, misses, share, boundary)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("hits", "misses", "share", "boundary", "centre_ratio"),
                         [(10, 95, 0.1, 2.0, 1.0), (30, 700, 0.05, 1.0, 0.75)])
def test_the_within_test_matches_numeric_integration(hits, misses, share, boundary, centre_ratio):
    theta0 = share_of(boundary, share)
    k = centred_concentration(theta0, centre_ratio / boundary, 0.3 / boundary)
    centre = share_of(centre_ratio, share)
    a, b = k * centre, k * (1 - centre)

    def ratio(t):
        return (t / theta0) ** hits * ((1 - t) / (1 - theta0)) ** misses * beta.pdf(t, a, b)

    expected = quad(ratio, 0, theta0, limit=200)[0] / beta.cdf(theta0, a, b)
    assert math.exp(log_e_within(hits, misses, share, boundary, centre_ratio)) == pytest.approx(expected, rel=1e-6)


def test_the_within_test_keeps_wrong_passes_under_alpha_at_the_boundary():
    # A canary exactly at the boundary (ratio 1.5), tested after every event: Ville's bound for the pass side.
    rng = random.Random(17)
    theta = share_of(1.5, 0.1)
    passes = 0
    for _ in range(400):
        hits = 0
        for n in range(1, 301):
            hits += rng.random() < theta
            if log_e_within(hits, n - hits, 0.1, 1.5, 1.0) >= math.log(1 / 0.05):
                passes += 1
                break
    assert passes / 400 < 0.05


def test_a_tail_mass_too_small_for_a_float_is_taken_in_log_space():
    # Found by hypothesis: at theta0 = 0.01 the posterior mass below it underflows to the smallest subnormal,
    # and moving an event to the canary seemed to help it. In log space the order is right.
    assert log_e_value(201, 0, 0.01, Side.BELOW) < log_e_value(200, 1, 0.01, Side.BELOW)
    assert math.isfinite(log_e_value(201, 0, 0.01, Side.BELOW))


def test_the_log_space_tail_agrees_with_betainc_where_both_can_say():
    from scipy.special import betainc

    from routing.rollouts.sequential import _log_lower_tail

    for a, b, x in [(5.0, 20.0, 0.05), (30.0, 3.0, 0.5), (202.0, 99.0, 0.3)]:
        assert _log_lower_tail(a, b, x) == pytest.approx(math.log(betainc(a, b, x)), rel=1e-9)
