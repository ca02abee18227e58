"""ASHA's promotion rule (celeb.sweep.asha): oracle cases worked out by hand from Li et al. (2020)."""

from __future__ import annotations

import math

from celeb.sweep.asha import PromotionRule, Rungs, rung_milestones, score


def test_milestones_sit_below_the_full_budget():
    assert rung_milestones(1, 9, 3) == [1, 3]
    assert rung_milestones(2, 6, 3) == [2]
    assert rung_milestones(1, 27, 3) == [1, 3, 9]


def test_score_is_higher_for_better_and_worst_for_nan():
    assert score(0.2, "min") > score(0.3, "min")
    assert score(0.3, "max") > score(0.2, "max")
    assert score(float("nan"), "max") == -math.inf
    assert score(None, "min") == -math.inf


def test_a_trial_waits_until_it_is_in_the_top_third_of_its_rung():
    rule = PromotionRule.new(grace_period=1, max_t=9, reduction_factor=3, total_trials=6)
    seen = {f"t{i}" for i in range(6)}
    # the first two arrive: floor(2 / 3) = 0 can go on, so both wait, however good
    assert rule.on_result("t0", 1, 0.9, seen) == "pause"
    assert rule.on_result("t1", 1, 0.5, seen) == "pause"
    assert rule.promote_waiting(seen) == []
    # a third, worse one: floor(3 / 3) = 1 may go on, and it is t0, the best, not the newcomer
    assert rule.on_result("t2", 1, 0.1, seen) == "pause"
    assert rule.promote_waiting(seen) == ["t0"]
    assert rule.waiting == {"t1": 1, "t2": 1}
    # a better one arrives with 4 seen: it is now the top 1 and not yet promoted, so it goes on
    # (promotions are never taken back: t0 stays promoted)
    assert rule.on_result("t3", 1, 0.99, seen) == "continue"
    # at 6 seen the quota is 2, and both of the top 2 have gone on
    assert rule.on_result("t4", 1, 0.2, seen) == "pause"
    assert rule.on_result("t5", 1, 0.3, seen) == "pause"
    assert rule.promote_waiting(seen) == []
    # rung 1 is closed (all 6 recorded): the rest can never go on
    assert sorted(rule.to_stop(seen)) == ["t1", "t2", "t4", "t5"]


def test_a_closed_rung_carries_its_best_trial_on_even_below_the_quota():
    rule = PromotionRule.new(grace_period=1, max_t=9, reduction_factor=3, total_trials=3)
    seen = {"a", "b", "c"}
    for trial, value in (("a", 0.1), ("b", 0.5), ("c", 0.3)):
        rule.on_result(trial, 1, value, seen)
    assert rule.promote_waiting(seen) == ["b"]
    for trial in ("a", "c"):
        rule.on_end(trial)
    # b alone reaches rung 3: floor(1 / 3) = 0, but nothing else can arrive, so it goes on
    assert rule.on_result("b", 3, 0.6, seen) == "continue"
    assert rule.on_result("b", 9, 0.7, seen) == "stop"


def test_a_rung_is_not_closed_while_trials_can_still_arrive():
    rule = PromotionRule.new(grace_period=1, max_t=9, reduction_factor=3, total_trials=4)
    rule.on_result("a", 1, 0.1, {"a", "b"})
    assert not rule.closed(1, {"a", "b"})  # 2 of 4 trials created
    assert not rule.closed(1, {"a", "b", "c", "d"})  # b, c and d may still arrive
    for trial in ("b", "c", "d"):
        rule.on_end(trial)
    assert rule.closed(1, {"a", "b", "c", "d"})


def test_state_round_trips_rungs_waiting_and_promotions():
    rule = PromotionRule.new(grace_period=1, max_t=9, reduction_factor=3, total_trials=6)
    seen = {"a", "b", "c"}
    for trial, value in (("a", 0.1), ("b", 0.5), ("c", 0.3)):
        rule.on_result(trial, 1, value, seen)
    rule.promote_waiting(seen)
    restored = PromotionRule.from_state(rule.state())
    assert restored.waiting == rule.waiting == {"a": 1, "c": 1}
    assert restored.rungs.promoted[1] == {"b"}
    assert restored.rungs.values == rule.rungs.values
    # it decides the next arrival as the original does
    assert restored.on_result("d", 1, 0.4, seen | {"d"}) == rule.on_result("d", 1, 0.4, seen | {"d"})


def test_a_recorded_trial_is_not_recorded_again_after_a_restart():
    rungs = Rungs([1, 3], 3)
    rungs.record("a", 1, 0.5)
    assert rungs.rung_reached("a", 1) is None
    assert rungs.rung_reached("a", 2) is None
    assert rungs.rung_reached("a", 3) == 3


def test_a_trial_first_seen_past_a_rung_does_not_keep_that_rung_open():
    # after a resume from an older snapshot, b's first report is at rung 3: it passed rung 1 unrecorded
    rule = PromotionRule.new(grace_period=1, max_t=9, reduction_factor=3, total_trials=4)
    seen = {"a", "b", "c", "d"}
    for trial, value in (("a", 0.1), ("c", 0.3), ("d", 0.2)):
        rule.on_result(trial, 1, value, seen)
    assert rule.on_result("b", 3, 0.6, seen) == "pause"
    assert rule.closed(1, seen)
    assert rule.promote_waiting(seen) == ["c"]  # rung 1's quota is 1 of the 3 recorded there
    assert sorted(rule.to_stop(seen)) == ["a", "d"]  # so the sweep can end
