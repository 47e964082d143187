"""The promotion gate's arithmetic (the end-to-end test checks it against a real registry)."""

from custseg.registry import promotion_decision


def test_first_model_is_always_promoted() -> None:
    decision = promotion_decision(0.1, None, tolerance=0.0)
    assert decision.promote and decision.reason == "no champion yet"


def test_within_tolerance_is_promoted_and_beyond_is_not() -> None:
    assert promotion_decision(0.395, 0.40, tolerance=0.01).promote
    assert promotion_decision(0.39, 0.40, tolerance=0.01).promote
    assert not promotion_decision(0.389, 0.40, tolerance=0.01).promote
    assert promotion_decision(0.45, 0.40, tolerance=0.0).promote
    assert not promotion_decision(0.3999, 0.40, tolerance=0.0).promote


def test_the_reason_says_why() -> None:
    reason = promotion_decision(0.30, 0.40, tolerance=0.05).reason
    assert reason == "silhouette 0.3000 < champion 0.4000 − tolerance 0.05"
