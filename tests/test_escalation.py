"""Tests of the 3+3 engine against the reference vectors in domain.md section 1.4.

Sources: R `escalation` tests/testthat/test_three_plus_three.R and test_enforce_three_plus_three.R,
its README, and the clintrials ThreePlusThree doctest.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from clinical.escalation import (
    BeyondThreePlusThree,
    Cohort,
    Decision,
    EscalationError,
    ParticipantOutcome,
    check_path,
    cli_escalate,
    decide_from_participants,
    dose_status,
    format_outcomes,
    parse_outcomes,
    recommend,
)

P = "1NNN 2NNN 3NNN 4NNN "  # the prefix written "..." in the domain table

# domain.md 1.4(a): outcomes, V1 (escalation-only), V2 (korn); None = "-" (not a path of that variant).
# Each cell: (recommended dose, continue). Strict mode unless listed in NON_STRICT.
TABLE = [
    ("", (1, True), (1, True)),
    ("1NN", (1, True), (1, True)),
    ("1NT", (1, True), (1, True)),
    ("1TT", (1, True), (1, True)),
    ("1NNN", (2, True), (2, True)),
    ("1NNT", (1, True), (1, True)),
    ("1NTT", (None, False), (None, False)),
    ("1TTT", (None, False), (None, False)),
    ("1NNN 2T", (2, True), (2, True)),
    ("1NNN 2TT", (2, True), (2, True)),
    ("1NNN 2NNN", (3, True), (3, True)),
    ("1NNN 2NTT", (1, False), (1, True)),
    ("1NNN 2NNT 2NNN", (3, True), (3, True)),
    ("1NNN 2NNT 2NNT", (1, False), (1, True)),
    (P + "5NNN", (5, False), (5, False)),
    (P + "5NNT 5NNN", (5, False), (5, False)),
    (P + "5NNT 5NNT", (4, False), (4, True)),
    (P + "5NNT 5TTT 4NNT", None, (4, False)),
    (P + "5NNT 5TTT 4NTT", None, (3, True)),
    (P + "5NNT 5TTT 4NTT 3TTT 2NTT 1NTT", None, (None, False)),
    ("1NNN 2NNN 2NNN 3NTT", None, (2, False)),
    ("1NTN 1NTN 2NTN 2NTN 3NTT", None, (None, False)),
]
# Upstream "manual check" paths that a 3+3 trial cannot produce (a 0/3 dose re-treated): they are
# evaluated non-strictly, as upstream does (strict_mode = FALSE), and strict mode must reject them.
NON_STRICT = {("korn", "1NNN 2NNN 2NNN 3NTT")}


def _table_cases():
    for outcomes, v1, v2 in TABLE:
        for variant, expected in (("escalation-only", v1), ("korn", v2)):
            if expected is not None:
                yield pytest.param(variant, outcomes, expected, id=f"{variant}:{outcomes or 'none'}")


@pytest.mark.parametrize("variant,outcomes,expected", list(_table_cases()))
def test_domain_table(variant, outcomes, expected):
    strict = (variant, outcomes) not in NON_STRICT
    d = recommend(outcomes, num_doses=5, variant=variant, strict=strict)
    assert (d.next_dose, d.continue_trial) == expected
    # mtd is the recommendation once the trial stops, None while it continues
    assert d.mtd == (None if d.continue_trial else expected[0])
    assert d.reason


@pytest.mark.parametrize("variant,outcomes,expected", list(_table_cases()))
def test_domain_table_through_cli(variant, outcomes, expected, capsys):
    argv = ["--doses", "5", "--variant", variant]
    if (variant, outcomes) in NON_STRICT:
        argv.append("--no-strict")
    assert cli_escalate(argv + [outcomes]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["next_dose", "continue", "mtd", "reason"]
    assert (out["next_dose"], out["continue"]) == expected
    assert out["mtd"] == (None if expected[1] else expected[0])


@pytest.mark.parametrize("variant,outcomes", sorted(NON_STRICT))
def test_manual_check_paths_are_rejected_in_strict_mode(variant, outcomes):
    with pytest.raises(EscalationError, match="toxicity-free dose is not re-treated"):
        recommend(outcomes, 5, variant, strict=True)


UPSTREAM_V1 = """
- | 1 | T
1N | 1 | T
1T | 1 | T
1NN | 1 | T
1NT | 1 | T
1TT | 1 | T
1NNN | 2 | T
1NNT | 1 | T
1NTT | NA | F
1TTT | NA | F
1NNN 2N | 2 | T
1NNN 2T | 2 | T
1NNN 2NN | 2 | T
1NNN 2NT | 2 | T
1NNN 2TT | 2 | T
1NNN 2NNN | 3 | T
1NNN 2NNT | 2 | T
1NNN 2NTT | 1 | F
1NNN 2TTT | 1 | F
1NNN 2NNT 2N | 2 | T
1NNN 2NNT 2T | 2 | T
1NNN 2NNT 2NN | 2 | T
1NNN 2NNT 2NT | 2 | T
1NNN 2NNT 2TT | 2 | T
1NNN 2NNT 2NNN | 3 | T
1NNN 2NNT 2NNT | 1 | F
1NNN 2NNT 2NTT | 1 | F
1NNN 2NNT 2NNN | 3 | T
1NNN 2NNN 3NNN 4NNN 5N | 5 | T
1NNN 2NNN 3NNN 4NNN 5NN | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNN | 5 | F
1NNN 2NNN 3NNN 4NNN 5NNT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NTT | 4 | F
1NNN 2NNN 3NNN 4NNN 5TTT | 4 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5N | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NN | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NNN | 5 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5NNT | 4 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5NTT | 4 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT | 4 | F
1NNN 1T | 1 | T
1NNN 1NNT | 2 | T
1NNN 1NTT | NA | F
1NNN 1TTT | NA | F
"""

UPSTREAM_V2 = """
- | 1 | T
1N | 1 | T
1T | 1 | T
1NN | 1 | T
1NT | 1 | T
1TT | 1 | T
1NNN | 2 | T
1NNT | 1 | T
1NTT | NA | F
1TTT | NA | F
1NNN 2N | 2 | T
1NNN 2T | 2 | T
1NNN 2NN | 2 | T
1NNN 2NT | 2 | T
1NNN 2TT | 2 | T
1NNN 2NNN | 3 | T
1NNN 2NNT | 2 | T
1NNN 2NTT | 1 | T
1NNN 2TTT | 1 | T
1NNN 2NNT 2N | 2 | T
1NNN 2NNT 2T | 2 | T
1NNN 2NNT 2NN | 2 | T
1NNN 2NNT 2NT | 2 | T
1NNN 2NNT 2TT | 2 | T
1NNN 2NNT 2NNN | 3 | T
1NNN 2NNT 2NNT | 1 | T
1NNN 2NNT 2NTT | 1 | T
1NNN 2NNT 2NNN | 3 | T
1NNN 2NNN 3NNN 4NNN 5N | 5 | T
1NNN 2NNN 3NNN 4NNN 5NN | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNN | 5 | F
1NNN 2NNN 3NNN 4NNN 5NNT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NTT | 4 | T
1NNN 2NNN 3NNN 4NNN 5TTT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5N | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NN | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TT | 5 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NNN | 5 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5NNT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5NTT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4N | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4T | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NN | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4TT | 4 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NNN | 4 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NNT | 4 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4TTT | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3N | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3T | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3NN | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3NT | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TT | 3 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3NNN | 3 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3NNT | 3 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3NTT | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2N | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2T | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NN | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NT | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2TT | 2 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NNN | 2 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NNT | 2 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2TTT | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1N | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1T | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1NN | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1NT | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1TT | 1 | T
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1NNN | 1 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1NNT | 1 | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1NTT | NA | F
1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NTT 3TTT 2NTT 1TTT | NA | F
1NNN 2NNN 3NTT | 2 | T
1NNN 2NNN 2NNN 3NTT | 2 | F
1NTN 1NNN 2NNN 3NTT | 2 | T
1NTN 1NNN 2NTN 2NNN 3NTT | 2 | F
1NTN 1NTN 2NTN 2NNN 3NTT | 2 | F
1NTN 1NTN 2NTN 2NTN 3NTT | NA | F
"""


def _upstream(text, variant):
    for line in text.strip().splitlines():
        outcomes, dose, cont = (part.strip() for part in line.split("|"))
        outcomes = "" if outcomes == "-" else outcomes
        expected = (None if dose == "NA" else int(dose), cont == "T")
        yield pytest.param(variant, outcomes, expected, id=f"{variant}:{outcomes or 'none'}")


UPSTREAM = list(_upstream(UPSTREAM_V1, "escalation-only")) + list(_upstream(UPSTREAM_V2, "korn"))
# The upstream vectors that are not valid 3+3 paths (our strict mode rejects them): a dose that was
# 0/3 re-treated (upstream's enforcer lets "1NNN 1T" and "1NNN 1NNT" through; a TODO in its tests).
UPSTREAM_INVALID = {
    ("escalation-only", "1NNN 1T"),
    ("escalation-only", "1NNN 1NNT"),
    ("escalation-only", "1NNN 1NTT"),
    ("escalation-only", "1NNN 1TTT"),
    ("korn", "1NNN 2NNN 2NNN 3NTT"),
}


@pytest.mark.parametrize("variant,outcomes,expected", UPSTREAM)
def test_every_upstream_vector(variant, outcomes, expected):
    """All of test_three_plus_three.R (strict_mode = FALSE there); strict agrees where the path is valid."""
    d = recommend(outcomes, num_doses=5, variant=variant, strict=False)
    assert (d.next_dose, d.continue_trial) == expected
    if (variant, outcomes) in UPSTREAM_INVALID:
        assert check_path(outcomes, 5, variant)
        with pytest.raises(EscalationError):
            recommend(outcomes, 5, variant, strict=True)
    else:
        assert check_path(outcomes, 5, variant) == []
        assert recommend(outcomes, 5, variant, strict=True) == d


def test_upstream_lists_complete():
    assert len(UPSTREAM) == 46 + 84


# README examples [S4]
def test_readme_examples():
    assert recommend("1NNN", 5).next_dose == 2
    d = recommend("1NNN 2NNN 3NNT", 5)
    assert (d.next_dose, d.continue_trial, d.mtd) == (3, True, None)
    d = recommend("1NNN 2NNN 3NNT 3NTN", 5)
    assert (d.next_dose, d.continue_trial, d.mtd) == (2, False, 2)
    assert recommend("2NTN", 5).next_dose == 2
    d = recommend("2NTT", 5, variant="korn")
    assert (d.next_dose, d.continue_trial, d.mtd) == (1, True, None)
    d = recommend("2NTT", 5, variant="escalation-only")
    assert (d.next_dose, d.continue_trial, d.mtd) == (1, False, 1)


def test_clintrials_doctest_path():
    """ThreePlusThree(5), cohort by cohort: 1 -> 2 -> 2 -> 3 -> 3 -> 2 (stop)."""
    steps = [("", 1, True), ("1NNN", 2, True), ("2TNN", 2, True), ("2NNN", 3, True), ("3TNN", 3, True), ("3TNN", 2, False)]
    path = ""
    for cohort, dose, cont in steps:
        path = f"{path} {cohort}".strip()
        d = recommend(path, 5, "escalation-only")
        assert (d.next_dose, d.continue_trial) == (dose, cont), path
    assert d.mtd == 2
    status = dose_status(path, 5)
    assert sum(s.treated for s in status) == 15  # trial.size()
    assert status[2].dlt == 2  # toxicities_at_dose(3)


@pytest.mark.parametrize(
    "outcomes,match",
    [
        ("1NNN 1N", "dose 1 had no DLT in its first 3"),
        ("1NNN 1NNN", "dose 1 had no DLT in its first 3"),
        ("1NNN 2NNT 2NNN 4N", "skipping dose 3"),
        ("1NNN 2TTT 1N", "de-escalation is not allowed in the escalation-only variant"),
    ],
)
def test_invalid_paths_raise_in_strict_mode(outcomes, match):
    with pytest.raises(EscalationError, match=match):
        recommend(outcomes, 5, "escalation-only", strict=True)
    # non-strict still gives advice (upstream behaviour)
    assert isinstance(recommend(outcomes, 5, "escalation-only", strict=False), Decision)


def test_strict_mode_other_violations():
    with pytest.raises(EscalationError, match="at most 6"):
        recommend("1NNT 1NNT 1N", 5, "korn")
    with pytest.raises(EscalationError, match="incomplete cohort"):
        recommend("1NN 2NNN", 5)
    with pytest.raises(EscalationError, match="de-escalates from dose 3 to 1, skipping dose 2"):
        recommend("1NNN 2NNN 3NTT 1N", 5, "korn")
    with pytest.raises(BeyondThreePlusThree, match=r"dose 4 has 10 participants"):
        recommend("1NNN 2NNN 3NNN 4NNN 5NNT 5TTT 4NNNNNNN", 5, "korn", strict=False)
    assert issubclass(BeyondThreePlusThree, EscalationError)  # the CLI reports it as an error (exit 2)


def test_korn_de_escalation_is_valid_in_korn():
    d = recommend("1NNN 2TTT 1N", 5, "korn")
    assert (d.next_dose, d.continue_trial) == (1, True)
    d = recommend("1NNN 2TTT 1NNN", 5, "korn")
    assert (d.next_dose, d.continue_trial, d.mtd) == (1, False, 1)


def test_v5_cohort_in_progress_with_two_dlts_keeps_enrolling_but_says_so():
    d = recommend("1NNN 2TT", 5)
    assert (d.next_dose, d.continue_trial) == (2, True)
    assert ">=2 DLT already" in d.reason


def test_dose_outside_range_always_raises():
    for strict in (True, False):
        with pytest.raises(EscalationError, match="outside 1..3"):
            recommend("1NNN 2NNN 3NNN 4N", 3, strict=strict)


def test_bad_arguments():
    with pytest.raises(EscalationError, match="unknown variant"):
        recommend("1NNN", 5, variant="storer")
    with pytest.raises(EscalationError, match="num_doses"):
        recommend("1NNN", 0)


# require_six_at_mtd (domain 1.2 V3)
@pytest.mark.parametrize(
    "variant,outcomes,expected",
    [
        # V1: the dose below a toxic dose is expanded to 6 before it is declared the MTD
        ("escalation-only", "1NNN 2NTT", (1, True, None)),
        ("escalation-only", "1NNN 2NTT 1N", (1, True, None)),
        ("escalation-only", "1NNN 2NTT 1NNN", (1, False, 1)),
        ("escalation-only", "1NNN 2NTT 1NNT", (1, False, 1)),
        ("escalation-only", "1NNN 2NTT 1NTT", (None, False, None)),
        ("escalation-only", "1NNT 1NNN 2NTT", (1, False, 1)),  # already 6 at dose 1
        # top dose 0/3: expand to 6 in both variants
        ("escalation-only", "1NNN 2NNN 3NNN", (3, True, None)),
        ("escalation-only", "1NNN 2NNN 3NNN 3NNT", (3, False, 3)),
        ("korn", "1NNN 2NNN 3NNN", (3, True, None)),
        ("korn", "1NNN 2NNN 3NNN 3NNN", (3, False, 3)),
        ("korn", "1NNN 2NNN 3NNN 3NTT", (2, True, None)),
        ("korn", "1NNN 2NNN 3NNN 3NTT 2NNN", (2, False, 2)),
        # unaffected when 6 are already there or nothing is declared
        ("korn", "1NNN 2NTT", (1, True, None)),
        ("escalation-only", "1NTT", (None, False, None)),
    ],
)
def test_require_six_at_mtd(variant, outcomes, expected):
    d = recommend(outcomes, 3, variant, require_six_at_mtd=True, strict=True)
    assert (d.next_dose, d.continue_trial, d.mtd) == expected


def test_require_six_reason_names_the_expansion():
    d = recommend("1NNN 2NTT", 3, require_six_at_mtd=True)
    assert "requires 6 at the MTD: treat 3 more at dose 1" in d.reason


def test_without_require_six_the_same_paths_stop_at_three():
    assert recommend("1NNN 2NTT", 3).to_json_dict() == {
        "next_dose": 1,
        "continue": False,
        "mtd": 1,
        "reason": "dose 2: 2/3 DLT; dose 2 exceeds the MTD: stop, recommend dose 1",
    }
    with pytest.raises(EscalationError, match="de-escalation is not allowed"):
        recommend("1NNN 2NTT 1NNN", 3)  # only valid when require_six_at_mtd


# parsing
def test_parse_outcomes():
    cohorts = parse_outcomes(" 1NNN  2NTN\t3T ")
    assert cohorts == [Cohort(1, (False,) * 3), Cohort(2, (False, True, False)), Cohort(3, (True,))]
    assert [c.n for c in cohorts] == [3, 3, 1]
    assert [c.dlt for c in cohorts] == [0, 1, 1]
    assert format_outcomes(cohorts) == "1NNN 2NTN 3T"
    assert parse_outcomes("") == []
    assert parse_outcomes("   ") == []
    assert parse_outcomes("12NT") == [Cohort(12, (False, True))]


@pytest.mark.parametrize("text", ["1NXN", "NNN", "1", "0NNN", "1nnn", "1NNN,2NNN", "1NNN2NNT", "-1N", "1.2NN"])
def test_parse_outcomes_rejects_malformed(text):
    with pytest.raises(EscalationError):
        parse_outcomes(text)


def test_parse_error_message_names_the_cohort():
    with pytest.raises(EscalationError, match=r"cohort 2 '2NXN' is not valid"):
        parse_outcomes("1NNN 2NXN")


def test_dose_status():
    status = dose_status("1NNN 2NTN 2NNT 3TT", 4)
    assert [(s.dose, s.treated, s.dlt) for s in status] == [(1, 3, 0), (2, 6, 2), (3, 2, 2), (4, 0, 0)]


# participant records -> status
D = dt.date


def rec(order, dose, dlt=False, window_open=False, evaluable=True, closes=None):
    return ParticipantOutcome(dose=dose, evaluable=evaluable, dlt=dlt, window_open=window_open, window_closes=closes, order=order)


def test_decide_all_complete():
    s = decide_from_participants([rec(1, 1), rec(2, 1), rec(3, 1)], 3, "escalation-only", False)
    assert s.mature is True
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (2, True, None)
    assert s.decision.reason == "dose 1: 0/3 DLT; escalate to dose 2"
    assert s.outcomes == "1NNN"
    assert s.pending == 0 and s.window_closes_first is None and s.window_closes_last is None
    assert s.current_dose == 1
    assert s.deviations == ()


def test_decide_pending_at_current_dose():
    records = [
        rec(1, 1), rec(2, 1), rec(3, 1),
        rec(4, 2),
        rec(5, 2, window_open=True, closes=D(2025, 3, 10)),
        rec(6, 2, window_open=True, closes=D(2025, 3, 1)),
    ]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert s.mature is False
    assert s.outcomes == "1NNN 2N"
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (2, True, None)
    assert "decision awaits DLT window closure of 2 participant(s) (2 at dose 2), closing 2025-03-01 to 2025-03-10" in s.decision.reason
    assert s.pending == 2
    assert (s.window_closes_first, s.window_closes_last) == (D(2025, 3, 1), D(2025, 3, 10))
    dose2 = s.doses[1]
    assert (dose2.treated, dose2.dlt, dose2.pending) == (1, 0, 2)
    assert (dose2.window_closes_first, dose2.window_closes_last) == (D(2025, 3, 1), D(2025, 3, 10))
    assert s.doses[0].pending == 0
    assert s.current_dose == 2
    assert s.deviations == ()


def test_decide_whole_new_cohort_pending():
    records = [rec(1, 1), rec(2, 1), rec(3, 1)] + [rec(i, 2, window_open=True, closes=D(2025, 5, i)) for i in (4, 5, 6)]
    s = decide_from_participants(records, 3, "korn", False)
    assert s.mature is False
    assert s.current_dose == 2
    # on complete data the last decision is still "escalate to dose 2"
    assert (s.decision.next_dose, s.decision.continue_trial) == (2, True)
    assert s.to_json_dict()["window_closes_first"] == "2025-05-04"
    assert s.to_json_dict()["window_closes_last"] == "2025-05-06"


def test_decide_dlt_counts_while_window_open_and_matures_the_decision():
    records = [rec(1, 1), rec(2, 1), rec(3, 1), rec(4, 2, dlt=True, window_open=True), rec(5, 2, dlt=True, window_open=True), rec(6, 2)]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert s.mature is True
    assert s.outcomes == "1NNN 2TTN"
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (1, False, 1)


def test_decide_non_evaluable_are_replaced():
    records = [rec(1, 1), rec(2, 1, evaluable=False), rec(3, 1, dlt=True), rec(4, 1)]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert s.outcomes == "1NTN"
    assert (s.doses[0].treated, s.doses[0].dlt, s.doses[0].excluded) == (3, 1, 1)
    assert (s.decision.next_dose, s.decision.continue_trial) == (1, True)


def test_decide_uses_infusion_order_not_list_order():
    records = [rec(7, 2), rec(1, 1), rec(4, 2, dlt=True), rec(3, 1), rec(2, 1), rec(5, 2), rec(6, 2), rec(8, 2), rec(9, 2)]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert s.outcomes == "1NNN 2TNN 2NNN"
    assert (s.decision.next_dose, s.decision.continue_trial) == (3, True)


def test_decide_korn_path_groups_cohorts_per_dose_in_order():
    # 2 is re-entered after 3 was too toxic: cohorts ordered by their first infusion
    records = [rec(i, 1) for i in (1, 2, 3)] + [rec(i, 2) for i in (4, 5, 6)]
    records += [rec(7, 3, dlt=True), rec(8, 3, dlt=True), rec(9, 3)]
    records += [rec(10, 2), rec(11, 2, dlt=True), rec(12, 2)]
    s = decide_from_participants(records, 3, "korn", False)
    assert s.outcomes == "1NNN 2NNN 3TTN 2NTN"
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (2, False, 2)
    assert s.deviations == ()


def test_decide_reports_deviations_instead_of_raising():
    records = [rec(1, 1), rec(2, 1), rec(3, 2), rec(4, 2), rec(5, 2)]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert len(s.deviations) == 1 and "incomplete cohort" in s.deviations[0]
    assert (s.decision.next_dose, s.decision.continue_trial) == (3, True)


def test_decide_beyond_three_plus_three_is_undetermined_not_raised():
    # 7 complete participants at dose 1 (as in a benchmark export): no 3+3 decision, but a status
    records = [rec(i, 1, dlt=i == 2) for i in range(1, 8)] + [rec(8, 1, window_open=True, closes=D(2025, 6, 1))]
    s = decide_from_participants(records, 3, "escalation-only", False)
    assert s.determined is False
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (None, False, None)
    assert s.decision.reason.startswith("no 3+3 decision: the participants treated do not follow a 3+3 path (")
    assert "dose 1 has 7 participants" in s.decision.reason and "DSMB" in s.decision.reason
    assert s.deviations and s.deviations[0].startswith("dose 1 has 7 participants")
    # the counts are the same as for a decided path
    assert [(d.treated, d.dlt, d.pending) for d in s.doses] == [(7, 1, 1), (0, 0, 0), (0, 0, 0)]
    assert (s.pending, s.mature, s.current_dose, s.outcomes) == (1, False, 1, "1NTN 1NNN 1N")
    assert s.to_json_dict()["determined"] is False
    # a 3+3 path is determined
    assert decide_from_participants(records[:3], 3, "escalation-only", False).determined is True


def test_decide_undetermined_reason_shows_the_first_deviations():
    records = [rec(i, d) for i, d in enumerate([1] * 7 + [2] * 7 + [3] * 7 + [1] * 7, start=1)]
    s = decide_from_participants(records, 3, "korn", False)
    assert s.determined is False
    shown = s.decision.reason.split("(", 1)[1]
    assert shown.startswith("dose 1 has 14 participants (at most 6 in a 3+3); dose 2 has 7")
    assert f"; and {len(s.deviations) - 3} more)" in s.decision.reason


def test_decide_empty_and_invalid():
    s = decide_from_participants([], 3, "escalation-only", False)
    assert (s.decision.next_dose, s.decision.continue_trial, s.mature, s.current_dose) == (1, True, True, None)
    with pytest.raises(EscalationError, match="outside 1..3"):
        decide_from_participants([rec(1, 4)], 3, "escalation-only", False)
    with pytest.raises(EscalationError, match="cohort_size"):
        decide_from_participants([], 3, "escalation-only", False, cohort_size=4)


def test_decide_require_six():
    records = [rec(i, 1) for i in (1, 2, 3)] + [rec(4, 2, dlt=True), rec(5, 2, dlt=True), rec(6, 2)]
    s = decide_from_participants(records, 3, "escalation-only", True)
    assert (s.decision.next_dose, s.decision.continue_trial, s.decision.mtd) == (1, True, None)


# CLI
def test_cli_json(capsys):
    assert cli_escalate(["--doses", "5", "--variant", "korn", "1NNN 2NNN 3NNT 3NTN"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out) == {
        "next_dose": 2,
        "continue": True,
        "mtd": None,
        "reason": "dose 3: 2/6 DLT; dose 3 exceeds the MTD: de-escalate to dose 2 (3 treated) and treat 3 more",
    }


def test_cli_unquoted_outcomes_and_defaults(capsys):
    assert cli_escalate(["--doses", "5", "1NNN", "2NNN", "3NNT", "3NTN"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "next_dose": 2,
        "continue": False,
        "mtd": 2,
        "reason": "dose 3: 2/6 DLT; dose 3 exceeds the MTD: stop, recommend dose 2",
    }


def test_cli_no_outcomes(capsys):
    assert cli_escalate(["--doses", "3", "--variant", "escalation-only", ""]) == 0
    assert json.loads(capsys.readouterr().out)["next_dose"] == 1
    assert cli_escalate(["--doses", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "next_dose": 1, "continue": True, "mtd": None, "reason": "no evaluable participants yet: start at dose 1"
    }


def test_cli_require_six(capsys):
    assert cli_escalate(["--doses", "3", "--require-six-at-mtd", "1NNN 2NNN 3NNN"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["next_dose"], out["continue"], out["mtd"]) == (3, True, None)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--doses", "5", "1NNN 1NNN"], "dose 1 had no DLT in its first 3"),
        (["--doses", "5", "1NXN"], "is not valid"),
        (["--doses", "5", "--variant", "storer", "1NNN"], "invalid choice"),
        (["1NNN"], "--doses"),
        (["--doses", "0", "1NNN"], "positive integer"),
        (["--doses", "2", "3NNN"], "outside 1..2"),
    ],
)
def test_cli_errors(argv, message, capsys):
    assert cli_escalate(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("escalate: error: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1  # one line


def test_cli_no_strict_accepts_invalid_path(capsys):
    assert cli_escalate(["--doses", "5", "--no-strict", "1NNN 1NNN"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["next_dose"], out["continue"]) == (2, True)


@pytest.mark.parametrize(
    ("outcomes", "variant", "want"),
    [
        # (next dose, continue, MTD) with stop_at_two_dlts; the R escalation package continues the cohort.
        ("1NNN 2TT", "escalation-only", (1, False, 1)),
        ("1NNN 2NNT 2T", "escalation-only", (1, False, 1)),  # 2 DLTs among 4 at dose 2
        ("1NNN 2TT", "korn", (1, True, None)),  # de-escalate to expand dose 1 (3 treated)
        ("1TT", "escalation-only", (None, False, None)),  # the lowest dose: no dose recommended
        ("1NNN 2NT", "escalation-only", (2, True, None)),  # one DLT: the cohort continues
    ],
)
def test_two_dlts_settle_a_dose_at_once_when_the_study_says_so(outcomes, variant, want):
    d = recommend(outcomes, 3, variant, strict=False, stop_at_two_dlts=True)
    assert (d.next_dose, d.continue_trial, d.mtd) == want
    if "2T" in outcomes and outcomes.count("T") >= 2 and variant == "escalation-only":
        assert "exceeds the MTD" in d.reason
        r = recommend(outcomes, 3, variant, strict=False)  # the package's rule: continue at dose 2
        assert (r.next_dose, r.continue_trial) == (2, True)


def test_two_dlts_among_four_evaluable_participants_stop_the_escalation():
    """The QC case: 3NTN then a DLT in the expansion at the top dose -- no one else is treated at it."""
    recs = [ParticipantOutcome(1, True, False, False, None, i) for i in range(3)]
    recs += [ParticipantOutcome(2, True, False, False, None, 3 + i) for i in range(3)]
    recs += [ParticipantOutcome(3, True, t, False, None, 6 + i) for i, t in enumerate((False, True, False, True))]
    status = decide_from_participants(recs, 3, stop_at_two_dlts=True)
    assert (status.decision.next_dose, status.decision.continue_trial, status.decision.mtd) == (2, False, 2)
    assert decide_from_participants(recs, 3).decision.next_dose == 3  # the package's rule


def test_pending_branches_say_what_the_open_windows_decide():
    """The demo's path at the cut: 1NNN 2TNN 2NNN then 3NT with the third DL3 participant's window open.
    No DLT: 1/3 at DL3, treat 3 more there; a DLT: 2/3, stop with DL2 the MTD."""
    from clinical.escalation import pending_branches

    def p(dose, order, dlt=False, open_=False):
        return ParticipantOutcome(dose, True, dlt, open_, dt.date(2026, 1, 18) if open_ else None, order)

    recs = [p(1, 0), p(1, 1), p(1, 2), p(2, 3, True), p(2, 4), p(2, 5), p(2, 6), p(2, 7), p(2, 8),
            p(3, 9), p(3, 10, True), p(3, 11, open_=True)]
    no_dlt, dlt = pending_branches(recs, 3, stop_at_two_dlts=True)
    assert (no_dlt.next_dose, no_dlt.continue_trial, no_dlt.mtd) == (3, True, None)
    assert (dlt.next_dose, dlt.continue_trial, dlt.mtd) == (2, False, 2)
    assert pending_branches(recs[:-1], 3) == (None, None)  # nothing pending: no branches
