"""The fake model API's knobs: latency distributions and failure rates."""

from __future__ import annotations

import random
from collections import Counter
from statistics import median

import pytest

from bench.fake_openai import Behaviour, FakeOpenAI, Latency, expected_answer


def test_latency_forms() -> None:
    random.seed(3)
    assert Latency.parse("fixed:0.25").sample() == 0.25
    uniform = Latency.parse("uniform:0.5:1.5")
    samples = [uniform.sample() for _ in range(2000)]
    assert min(samples) >= 0.5 and max(samples) <= 1.5 and uniform.mean() == 1.0
    lognormal = Latency.parse("lognormal:1.0:0.2")
    samples = [lognormal.sample() for _ in range(4000)]
    assert 0.95 < median(samples) < 1.05
    assert 1.0 < lognormal.mean() < 1.03
    for bad in ("fixed", "uniform:1", "pareto:1:2", "fixed:x"):
        with pytest.raises(ValueError):
            Latency.parse(bad)


def test_failure_rates() -> None:
    random.seed(7)
    server = FakeOpenAI(Behaviour(rate_429=0.2, error_rate=0.1, retry_after=3))
    outcomes = Counter(server._chance().get("status", 200) for _ in range(20_000))
    assert abs(outcomes[429] / 20_000 - 0.2) < 0.02
    assert abs(outcomes[500] / 20_000 - 0.1) < 0.02
    assert server._chance() in ({}, {"status": 429, "retry_after": 3, "delay": 0},
                                {"status": 500, "delay": 0})


def test_answers_depend_on_the_image() -> None:
    answers = {expected_answer(bytes([i]) * 64)["category"] for i in range(64)}
    assert len(answers) > 3  # different images, different categories
    one = expected_answer(b"same")
    assert one == expected_answer(b"same") and 0.5 <= one["confidence"] <= 1.0
