"""Anytime-valid tests for counts: beta-binomial mixture martingales.

Lindon & Malek, "Anytime-Valid Inference for Multinomial Count Data" (NeurIPS
2022), for two categories. Each event (an error, a slow request) lands on the
canary or on the baseline. Under "no difference" it lands on the canary with
probability theta0, the canary's share of requests, however the load moves.
The mixture of likelihood ratios over a Beta prior on theta is a non-negative
martingale under theta0 (a supermartingale under any theta on the null side
of a one-sided test), so by Ville's inequality it exceeds 1/alpha with
probability at most alpha, at any of arbitrarily many looks.

Everything is in log space; e-values are returned as their natural logs.
"""

import math
from enum import StrEnum

from scipy.optimize import brentq
from scipy.special import betainc, betaincc, betaln

# Spread of the mixing prior on the rate-ratio scale: the tests detect
# ratios of about 1 +/- PRIOR_RATIO_SD fastest and stay valid for any.
PRIOR_RATIO_SD = 1.0
# The test for "the canary is worse" centres its prior on a doubled rate instead of on no change: the
# regressions a rollout must catch within minutes are large, and a prior piled up just above theta0 spends
# its mass on differences no window of a step could show. Any fixed prior on the alternative side keeps the
# mixture a martingale under the null, so this changes power, never validity (bench/RESULTS.md).
WORSE_PRIOR_RATIO = 2.0
WORSE_PRIOR_RATIOS = (WORSE_PRIOR_RATIO, 8.0)
# The test for "the canary is within its allowance" centres its prior where a canary that deserves to pass sits
# (no change, or the ratio an unchanged distribution gives) with this spread: tighter than the worse side's,
# because the allowance is small next to the regressions a rollback must catch.
WITHIN_PRIOR_SD = 0.3
MIN_CONCENTRATION = 2.0
DISPERSION_PRIOR_DF = 4
RATIO_SEARCH = (1e-4, 1e4)
TINY = 1e-290  # below this a tail mass is taken in log space


class Side(StrEnum):
    """Which alternatives the mixture covers: theta above or below theta0, or both (no truncation)."""

    ABOVE = "above"
    BELOW = "below"
    BOTH = "both"  # e.g. a sample-ratio check that the split is the configured one


def concentration(theta0, ratio_sd=PRIOR_RATIO_SD):
    """Return the Beta prior's a + b so its sd on the rate-ratio scale is about ratio_sd.

    Near theta0, d theta / d ratio = theta0 (1 - theta0); a Beta(k theta0, k (1 - theta0))
    has variance theta0 (1 - theta0) / (k + 1).
    """
    return max(MIN_CONCENTRATION, 1.0 / (theta0 * (1.0 - theta0) * ratio_sd**2) - 1.0)


def centred_concentration(theta0, ratio, ratio_sd=PRIOR_RATIO_SD):
    """Return the a + b of a Beta prior with mean share_of(ratio, theta0) and sd about ratio_sd on the
    rate-ratio scale there (the slope of share_of at ratio times ratio_sd); at ratio 1 this is concentration()."""
    centre = share_of(ratio, theta0)
    slope = theta0 * (1.0 - theta0) / (theta0 * ratio + 1.0 - theta0) ** 2
    return max(MIN_CONCENTRATION, centre * (1.0 - centre) / (slope * ratio_sd) ** 2 - 1.0)


def _log_tail(a, b, theta0, side):
    """Return log P(theta on `side` of theta0) for theta ~ Beta(a, b); -inf when even its log underflows.

    betainc is fast but floors at the smallest subnormal; a mass that small is taken in log space instead.
    """
    if side == Side.BOTH:
        return 0.0
    mass = betaincc(a, b, theta0) if side == Side.ABOVE else betainc(a, b, theta0)
    if mass > TINY:
        return math.log(mass)
    return _log_lower_tail(b, a, 1.0 - theta0) if side == Side.ABOVE else _log_lower_tail(a, b, theta0)


def _log_lower_tail(a, b, x, max_terms=100_000):
    """Return log I_x(a, b), the regularized incomplete beta function, for a tail too small for a float:
    x^a (1 - x)^b / (a B(a, b)) times the hypergeometric series sum_n (a + b)_n / (a + 1)_n x^n
    (Abramowitz & Stegun 26.5.23), summed in floats because its terms start at 1 and shrink."""
    total, term, n = 1.0, 1.0, 0
    while n < max_terms:
        term *= (a + b + n) / (a + 1 + n) * x
        total += term
        n += 1
        if term < 1e-17 * total:
            break
    return a * math.log(x) + b * math.log1p(-x) - math.log(a) - betaln(a, b) + math.log(total)


def log_e_value(hits, misses, theta0, side, ratio_sd=PRIOR_RATIO_SD, k=None, centre=None):
    """Return the log e-value of H0: theta = theta0 (or beyond it, away from `side`).

    hits events fell in the tested category, misses in the other. The prior is
    Beta(k c, k (1 - c)) truncated to `side`, so only departures to that side
    build evidence; its mean c is `centre` (default theta0) and k defaults to
    concentration(theta0, ratio_sd). Raises ValueError for theta0 or centre
    outside (0, 1).
    """
    centre = theta0 if centre is None else centre
    if not (0 < theta0 < 1 and 0 < centre < 1):
        raise ValueError("theta0 and the prior's centre must be strictly between 0 and 1")
    k = concentration(theta0, ratio_sd) if k is None else k
    a, b = k * centre, k * (1.0 - centre)
    mixture = betaln(a + hits, b + misses) - betaln(a, b)
    tails = _log_tail(a + hits, b + misses, theta0, side) - _log_tail(a, b, theta0, side)
    null = hits * math.log(theta0) + misses * math.log1p(-theta0)
    return float(mixture + tails - null)  # a plain float: verdicts are stored as JSON


def share_of(ratio, share):
    """Return the canary's share of events when its rate is `ratio` times the baseline's."""
    return share * ratio / (share * ratio + 1.0 - share)


def ratio_of(theta, share):
    """Return the rate ratio at which the canary gets a share `theta` of the events (inverse of share_of)."""
    return theta * (1.0 - share) / (share * (1.0 - theta))


def log_e_ratio(canary, baseline, share, ratio, side):
    """Return the log e-value against "canary rate = ratio x baseline rate".

    side ABOVE tests for a canary worse than that ratio, BELOW for better.
    canary and baseline are event counts; share is the canary's share of requests.
    """
    return log_e_value(canary, baseline, share_of(ratio, share), side)


def log_e_worse(canary, baseline, share, boundary=1.0, ratio=WORSE_PRIOR_RATIO):
    """Return the log e-value against "the canary's rate is at most `boundary` x the baseline's".

    The prior is centred on `ratio` x `boundary` (centred_concentration), truncated above the boundary.
    """
    theta0 = share_of(boundary, share)
    k = centred_concentration(theta0, ratio)
    return log_e_value(canary, baseline, theta0, Side.ABOVE, k=k, centre=share_of(ratio, theta0))


def log_e_beyond(canary, baseline, share, boundary=1.0, ratios=WORSE_PRIOR_RATIOS):
    """Return the log of the mean of log_e_worse's e-values over priors centred on each of `ratios` x the
    boundary: a mean of e-values is one, and a prior with a heavier tail catches a canary ten times worse
    within a few events without giving up the moderate regressions the first prior is for."""
    values = [log_e_worse(canary, baseline, share, boundary, ratio) for ratio in ratios]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values)) if top > -math.inf else top


def log_e_within(canary, baseline, share, boundary, centre_ratio, ratio_sd=WITHIN_PRIOR_SD):
    """Return the log e-value against "the canary's rate is at least `boundary` x the baseline's".

    Rejecting it is evidence the canary is within the boundary. The prior is centred on `centre_ratio` x the
    baseline's rate (below the boundary: where a canary that deserves a pass sits), with sd about ratio_sd on
    the ratio scale there, truncated below the boundary.
    """
    theta0 = share_of(boundary, share)
    relative = centre_ratio / boundary
    k = centred_concentration(theta0, relative, ratio_sd / boundary)
    return log_e_value(canary, baseline, theta0, Side.BELOW, k=k, centre=share_of(relative, theta0))


def dispersion(minutes):
    """Return the over-dispersion of the canary's share of events from minute to minute (at least 1).

    minutes are (canary events, canary requests, baseline events, baseline requests). Each minute's
    canary events are compared with what the window's own ratio predicts from that minute's events and
    request shares (Pearson's chi-square over its degrees of freedom, as in a quasi-binomial fit): 1 when
    events fall independently, far above 1 when a provider's bad spell piles them into a few minutes.
    Minutes without events or without both arms say nothing; fewer than two informative minutes give 1.
    The estimate is shrunk towards 1 by DISPERSION_PRIOR_DF degrees of freedom: with sparse events a few
    minutes' chi-square is noisy, and max(1, noise) alone would weigh independent counts down for nothing.
    """
    useful = [(c, b, cn / (cn + bn)) for c, cn, b, bn in minutes if c + b > 0 and cn > 0 and bn > 0]
    if len(useful) < 2:
        return 1.0
    hits = sum(c for c, _, _ in useful)
    events = hits + sum(b for _, b, _ in useful)
    requests_share = sum(cn for _, cn, _, bn in minutes if cn and bn) / sum(
        cn + bn for _, cn, _, bn in minutes if cn and bn)
    fitted = ratio_of(min(max((hits + 0.5) / (events + 1.0), 1e-6), 1 - 1e-6), requests_share)
    chi2 = 0.0
    for c, b, share in useful:
        theta = share_of(max(fitted, 1e-6), share)
        expected = (c + b) * theta
        chi2 += (c - expected) ** 2 / max(expected * (1.0 - theta), 1e-9)
    return max(1.0, (DISPERSION_PRIOR_DF + chi2) / (DISPERSION_PRIOR_DF + len(useful) - 1))


def ratio_bounds(canary, baseline, share, alpha):
    """Return (lower, upper): a time-uniform 1 - 2 alpha confidence sequence for the rate ratio.

    Ratios outside it are rejected by the one-sided test at level alpha each.
    lower is 0 and upper math.inf when no ratio in RATIO_SEARCH is rejected on that side.
    """
    level = math.log(1.0 / alpha)

    def worse(log_ratio):
        return log_e_ratio(canary, baseline, share, math.exp(log_ratio), Side.ABOVE) - level

    def better(log_ratio):
        return log_e_ratio(canary, baseline, share, math.exp(log_ratio), Side.BELOW) - level

    lower = _crossing(worse, rejected_below=True)
    upper = _crossing(better, rejected_below=False)
    return (0.0 if lower is None else lower), (math.inf if upper is None else upper)


def _crossing(excess, rejected_below):
    """Return the ratio where excess (log e minus level) crosses 0, or None if it never does.

    rejected_below says the rejected ratios lie below the crossing (the lower bound).
    """
    low, high = (math.log(r) for r in RATIO_SEARCH)
    inner = low if rejected_below else high
    outer = high if rejected_below else low
    if excess(inner) < 0:
        return None
    if excess(outer) >= 0:
        return math.exp(outer)
    return math.exp(brentq(excess, low, high, xtol=1e-6))
