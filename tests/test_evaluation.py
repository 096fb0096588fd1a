"""How the Evaluator's findings read on the command line."""

from pipeline.evaluation import Evaluation, describe_evaluation


def _evaluation(blessed: bool, baseline: bool) -> Evaluation:
    recall = {
        "all": {"candidate": {10: 0.1, 50: 0.3, 100: 0.5}},
        "user_cohort=returning": {"candidate": {10: 0.2, 50: 0.4, 100: 0.6}},
    }
    if baseline:
        recall["all"]["baseline"] = {10: 0.15, 50: 0.35, 100: 0.55}
    return Evaluation(
        recall=recall,
        pairs={"all": 1200, "user_cohort=returning": 700},
        blessed=blessed,
        failures=()
        if blessed
        else ("all: recall@100 change -0.0500 is below the baseline",),
    )


def test_a_rejected_candidate_shows_both_models_and_why():
    lines = describe_evaluation(_evaluation(False, True), 0.05, 0.01)

    table = "\n".join(lines)
    assert lines[0].split()[:2] == ["slice", "pairs"]
    assert "all" in lines[1] and "1,200" in lines[1]
    assert "0.500" in lines[1] and "0.550" in lines[1]
    # The returning users have no baseline figures: dashes.
    assert lines[2].split()[-1] == "-"
    assert "baseline - 0.01" in table
    assert lines[-2] == "blessed: no"
    assert "below the baseline" in lines[-1]


def test_a_first_run_says_it_is_judged_on_the_floor():
    lines = describe_evaluation(_evaluation(True, False), 0.05, 0.01)

    assert "no baseline yet" in lines[-2]
    assert lines[-1].startswith("blessed: yes")
