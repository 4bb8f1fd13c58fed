"""A verdict's sentence reads like a person wrote it: counts are whole numbers, thresholds never in e-notation."""

import re
from dataclasses import replace

import numpy as np

from probes import sketch
from probes.rollups import RollupDelta
from routing.rollouts.analysis import Metric, MetricVerdict, StepWindow, Verdict, _rate_sentence, judge
from tests.routing.rollouts.test_analysis import ERRORS, TTFT, _ttft_window, _window

WHOLE = r"\d{1,3}(?:,\d{3})*"


def _stored(delta):
    """The delta as a rollout reads it back from its Rollup row: sketches from JSON hold float counts."""
    return replace(delta, ttft=sketch.from_json(sketch.to_json(delta.ttft)))


def test_tail_sentences_count_slower_requests_in_whole_numbers():
    window = _ttft_window(np.random.default_rng(7), canary_scale=1.5)
    stored = StepWindow([_stored(d) for d in window.canary], [_stored(d) for d in window.baseline])
    assert isinstance(stored.canary[0], RollupDelta) and isinstance(stored.canary[0].ttft.count, float)
    sentence = judge(stored, [TTFT]).metrics[0].sentence
    counts = re.findall(r"(?:canary|baseline) ([\d,.]+) of ([\d,.]+) slower", sentence)
    assert len(counts) == 4, sentence
    assert all(re.fullmatch(WHOLE, n) for pair in counts for n in pair), sentence  # "716", never "716.0"


def test_rate_sentences_name_their_thresholds_without_e_notation():
    sentence = judge(_window([(400, 0)] * 10, [(4000, 4)] * 10), [ERRORS]).metrics[0].sentence
    threshold = re.search(r"e-value \S+ of (\S+?)[,)]", sentence).group(1)
    assert "e+" not in threshold and re.fullmatch(WHOLE, threshold), sentence
    assert re.search(rf"canary errors {WHOLE} of {WHOLE} \(\d+\.\d %\)", sentence), sentence


def _rate_verdict(verdict, canary, baseline, **evidence):
    """A rate guard's verdict with its evidence as the analysis stores it (counts may be corrected, so floats)."""
    arms = {"canary": {"events": canary[0], "requests": canary[1], "rate": canary[0] / canary[1]},
            "baseline": {"events": baseline[0], "requests": baseline[1], "rate": baseline[0] / baseline[1]}}
    return MetricVerdict(Metric.ERRORS, verdict, "", arms | {"alpha": 0.01, "fail_threshold": 100.0, "phi": 1.0,
                                                             "progress": {"fail": 0.2, "pass": 0.4}} | evidence)


def test_a_rate_sentence_prints_its_counts_whole_even_when_they_arrive_as_floats():
    verdict = _rate_verdict(Verdict.INCONCLUSIVE, (12.0, 3400.0), (40.0, 36000.0), e_fail=2.0, e_pass=3.0,
                            pass_threshold=20.0)
    sentence = _rate_sentence(ERRORS, verdict)
    assert sentence.startswith("canary errors 12 of 3,400 (0.4 %) vs baseline 40 of 36,000 (0.1 %)"), sentence
    assert ".0 of" not in sentence


def test_an_e_value_just_under_a_hundred_reads_100_not_1e_02():
    verdict = _rate_verdict(Verdict.PASS, (1, 4000), (40, 40000), e_fail=0.01, e_pass=99.7, pass_threshold=20.0)
    assert "within +0.5 pp: e-value 100 of 20" in _rate_sentence(ERRORS, verdict)
