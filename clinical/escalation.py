"""The 3+3 dose-escalation engine (pure: no Dagster, no pandas).

Outcome notation (R package ``escalation``, ``R/parse_phase1_outcomes.R`` [S4]): cohorts separated
by whitespace, each a 1-based dose level followed by one letter per participant, ``T`` = DLT,
``N`` = no DLT. ``"1NNN 2NTN"`` = three at dose 1 without DLT, then three at dose 2 with one DLT.

Decision rules (source keys [S..] as in the shared reference domain.md, section 1). The decision
looks only at the dose of the **last** cohort, ``d``, with ``n`` evaluable participants and ``x``
DLTs at ``d`` (the algorithm of ``escalation::three_plus_three``, ``R/three_plus_three.R`` [S4];
``clintrials ThreePlusThree`` [S5] gives the same answers on complete cohorts; V1/V2 are
``bcrm::threep3`` with/without ``threep3.esc.only`` [S6]):

======================  ========================================  ========================================
at dose d               V1 ``escalation-only`` (Storer/Reiner)     V2 ``korn`` (Korn 1994, "6 at the MTD")
======================  ========================================  ========================================
n < 3, or 3 < n < 6     stay at d, continue (cohort in progress;   same
                        V5: even with >=2 DLT already, as in [S4];
                        with ``stop_at_two_dlts``, >=2 DLT is
                        x >= 2 below, as clinical practice has it)
n = 3, x = 0            escalate to d+1; stop and recommend d if   same
                        d is the top dose (V3) or d+1 already has
                        >=6 treated or >=2 DLT
n = 3, x = 1            stay at d (expand to 6), continue          same
n = 6, x <= 1           as n = 3, x = 0                            same
n in {3, 6}, x >= 2     stop; recommend d-1 even if d-1 has only   if d-1 has <6: go to d-1, continue;
                        3 (none if d = 1)                          else stop with MTD = highest dose with
                                                                   >=6 treated and <=1 DLT (none if no such
                                                                   dose, or if d = 1)
n > 6                   no decision (3+3 never treats more than    same
                        6): :class:`BeyondThreePlusThree`
======================  ========================================  ========================================

``require_six_at_mtd`` (domain 1.2 V3, the open protocol question): whenever the rules above would
stop with a recommended dose that has fewer than 6 evaluable participants, the engine instead
continues at that dose (``next_dose`` = that dose, ``continue`` = True) until it has 6. Applied to V1
this re-expands the dose below a toxic dose (which makes V1 behave like Korn), and in both variants it
expands a top dose that was 0/3.

Not separate variants here: V4 (NCT06871644 "modified 3+3" [S8]) mixes the two (2/6: stop, as V1;
>=3/6: one dose down and 3 more, as V2), so the protocol must pick V1 or V2 (with
``require_six_at_mtd``); V6 (sentinel/staggered dosing [S9][S10]) is about timing, which
:func:`decide_from_participants` covers through pending participants and ``mature``.

More than 6 evaluable participants at the last dose (e.g. a benchmark export with thousands per
dose) is beyond what the rules decide: :func:`recommend` raises :class:`BeyondThreePlusThree` (an
:class:`EscalationError`, also with ``strict=False``), and :func:`decide_from_participants` returns
its status with ``determined=False`` and a decision that names the first departures from a 3+3 path.

``mtd`` is the recommended dose when the trial stops (None when no dose is safe) and None while the
trial continues.

Strict mode rejects only paths that cannot come from a 3+3 trial (``enforce_three_plus_three`` in
[S4], ``R/enforce_three_plus_three.R``, sharpened so that legitimate Korn/require-six paths pass):

* more than 6 participants at a dose;
* skipped doses (a move up or down of more than one level);
* an incomplete cohort at a dose other than the last one treated (i.e. more than one cohort in
  progress, or the trial moved on before a cohort was complete);
* de-escalation in the escalation-only variant (allowed when ``require_six_at_mtd`` asks to expand
  the dose below a toxic dose);
* a dose treated beyond 3 although its first 3 had no DLT and the trial never came back to it by
  de-escalation (re-treating a toxicity-free dose; allowed for the top dose when
  ``require_six_at_mtd``). This also rejects ``1NNN 1T`` and ``1NNN 1NNT``, which upstream's
  enforcer lets through (a TODO in its tests).

Not checked (as upstream): further treatment of a dose that already has >=2 DLT, or escalation
above it; the decision then still follows the last dose given.

Upstream's test table (``strict_mode = FALSE``) also contains manual-check paths that break these
rules (e.g. ``1NNN 2NNN 2NNN 3NTT``: a 0/3 dose expanded to 6); they are evaluated with
``strict=False`` (CLI ``--no-strict``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

VARIANTS = ("escalation-only", "korn")
COHORT_SIZE = 3  # the rules below are the 3+3 rules; other cohort sizes are not supported
MAX_PER_DOSE = 6
MAX_DEVIATIONS_SHOWN = 3  # in the reason of an undetermined decision

_COHORT_RE = re.compile(r"^(\d+)([NT]+)$")


class EscalationError(ValueError):
    """Malformed outcomes, invalid arguments, or a path that a 3+3 trial cannot produce."""


class BeyondThreePlusThree(EscalationError):
    """The last dose treated has more than 6 evaluable participants: the 3+3 rules give no decision.

    :func:`decide_from_participants` turns it into an undetermined status instead of raising.
    """


@dataclass(frozen=True)
class Cohort:
    """One cohort: a dose level (1-based) and the DLT outcome of each participant in order."""

    dose: int
    outcomes: tuple[bool, ...]  # True = DLT

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def dlt(self) -> int:
        return sum(self.outcomes)

    def __str__(self) -> str:
        return f"{self.dose}" + "".join("T" if t else "N" for t in self.outcomes)


def parse_outcomes(text: str) -> list[Cohort]:
    """Parse ``"1NNN 2NTN"`` into cohorts. Empty or blank text means no cohorts."""
    if not isinstance(text, str):
        raise EscalationError(f"outcomes must be a string, got {type(text).__name__}")
    cohorts = []
    for i, token in enumerate(text.split(), start=1):
        m = _COHORT_RE.match(token)
        if not m:
            raise EscalationError(
                f"cohort {i} {token!r} is not valid: expected a dose level number followed by one "
                "letter per participant, T (DLT) or N (no DLT), e.g. '1NNN 2NTN'"
            )
        dose = int(m.group(1))
        if dose < 1:
            raise EscalationError(f"cohort {i} {token!r}: dose levels are numbered from 1")
        cohorts.append(Cohort(dose, tuple(c == "T" for c in m.group(2))))
    return cohorts


def format_outcomes(cohorts: Sequence[Cohort]) -> str:
    """The inverse of :func:`parse_outcomes`."""
    return " ".join(str(c) for c in cohorts)


@dataclass(frozen=True)
class Decision:
    next_dose: int | None  # 1-based; the recommended dose when the trial stops; None: no safe dose
    continue_trial: bool
    mtd: int | None  # set only when the trial stops
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "next_dose": self.next_dose,
            "continue": self.continue_trial,
            "mtd": self.mtd,
            "reason": self.reason,
        }


@dataclass
class DoseStatus:
    dose: int  # 1-based
    treated: int  # evaluable participants with complete data (DLT or window closed)
    dlt: int
    pending: int = 0  # evaluable so far, DLT window still open, no DLT yet
    excluded: int = 0  # not DLT-evaluable (replaced)
    window_closes_first: dt.date | None = None  # among pending participants
    window_closes_last: dt.date | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "dose": self.dose,
            "treated": self.treated,
            "dlt": self.dlt,
            "pending": self.pending,
            "excluded": self.excluded,
            "window_closes_first": _iso(self.window_closes_first),
            "window_closes_last": _iso(self.window_closes_last),
        }


def _iso(d: dt.date | None) -> str | None:
    return d.isoformat() if d is not None else None


def _as_cohorts(cohorts: Sequence[Cohort] | str) -> list[Cohort]:
    if isinstance(cohorts, str):
        return parse_outcomes(cohorts)
    return list(cohorts)


def _check_args(num_doses: int, variant: str) -> None:
    if variant not in VARIANTS:
        raise EscalationError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not isinstance(num_doses, int) or num_doses < 1:
        raise EscalationError(f"num_doses must be a positive integer, got {num_doses!r}")


def _check_range(path: Sequence[Cohort], num_doses: int) -> None:
    for i, c in enumerate(path, start=1):
        if not 1 <= c.dose <= num_doses:
            raise EscalationError(f"cohort {i} '{c}': dose {c.dose} is outside 1..{num_doses}")
        if c.n == 0:
            raise EscalationError(f"cohort {i}: a cohort needs at least one participant")


def dose_status(cohorts: Sequence[Cohort] | str, num_doses: int) -> list[DoseStatus]:
    """Participants treated and DLTs per dose level, for doses 1..num_doses."""
    path = _as_cohorts(cohorts)
    _check_range(path, num_doses)
    out = [DoseStatus(dose=d, treated=0, dlt=0) for d in range(1, num_doses + 1)]
    for c in path:
        out[c.dose - 1].treated += c.n
        out[c.dose - 1].dlt += c.dlt
    return out


def check_path(
    cohorts: Sequence[Cohort] | str,
    num_doses: int,
    variant: str = "escalation-only",
    require_six_at_mtd: bool = False,
) -> list[str]:
    """Every way the path departs from a 3+3 trial (empty list: a valid path). See module doc."""
    path = _as_cohorts(cohorts)
    _check_args(num_doses, variant)
    _check_range(path, num_doses)
    if not path:
        return []
    status = dose_status(path, num_doses)
    problems: list[str] = []

    for s in status:
        if s.treated > MAX_PER_DOSE:
            problems.append(f"dose {s.dose} has {s.treated} participants (at most {MAX_PER_DOSE} in a 3+3)")

    reentered: set[int] = set()  # doses returned to from a higher dose (Korn, require-six)
    highest = path[0].dose
    for i in range(1, len(path)):
        prev, cur = path[i - 1].dose, path[i].dose
        if cur > prev + 1:
            skipped = ", ".join(str(d) for d in range(prev + 1, cur))
            problems.append(f"cohort {i + 1} '{path[i]}' escalates from dose {prev} to {cur}, skipping dose {skipped}")
        elif cur < prev - 1:
            skipped = ", ".join(str(d) for d in range(cur + 1, prev))
            problems.append(f"cohort {i + 1} '{path[i]}' de-escalates from dose {prev} to {cur}, skipping dose {skipped}")
        if cur < prev and variant == "escalation-only" and not require_six_at_mtd:
            problems.append(
                f"cohort {i + 1} '{path[i]}' de-escalates from dose {prev} to {cur}: "
                "de-escalation is not allowed in the escalation-only variant"
            )
        if cur < highest:
            reentered.add(cur)
        highest = max(highest, cur)

    last = path[-1].dose
    for s in status:
        if s.dose != last and s.treated % COHORT_SIZE:
            problems.append(
                f"dose {s.dose} has an incomplete cohort ({s.treated} participants) "
                f"while dose {last} is being treated (more than one cohort in progress)"
            )
    # A dose whose first cohort of 3 was toxicity-free is not treated again (the rules escalate),
    # unless the trial came back to it from a higher dose, or require-six expands the top dose.
    per_dose: dict[int, list[bool]] = {}
    for c in path:
        per_dose.setdefault(c.dose, []).extend(c.outcomes)
    for dose, outcomes in sorted(per_dose.items()):
        top_expansion = require_six_at_mtd and dose == num_doses
        first = outcomes[:COHORT_SIZE]
        if (
            len(outcomes) > COHORT_SIZE
            and not any(first)
            and dose not in reentered
            and not top_expansion
        ):
            problems.append(
                f"dose {dose} had no DLT in its first {COHORT_SIZE} participants but {len(outcomes)} "
                "were treated: a toxicity-free dose is not re-treated (the trial should have escalated)"
            )
    return problems


def recommend(
    cohorts: Sequence[Cohort] | str,
    num_doses: int,
    variant: str = "escalation-only",
    require_six_at_mtd: bool = False,
    strict: bool = True,
    stop_at_two_dlts: bool = False,
) -> Decision:
    """The 3+3 decision after the given cohorts (see the rule table in the module docstring).

    ``stop_at_two_dlts`` (V5): a dose with >= 2 DLTs exceeds the MTD at once, even when its cohort is
    still in progress; by default the cohort continues, as in the R ``escalation`` package."""
    path = _as_cohorts(cohorts)
    _check_args(num_doses, variant)
    _check_range(path, num_doses)
    if strict:
        problems = check_path(path, num_doses, variant, require_six_at_mtd)
        if problems:
            raise EscalationError(f"not a valid 3+3 path '{format_outcomes(path)}': " + "; ".join(problems))
    status = dose_status(path, num_doses)
    decision = _three_plus_three(path, status, num_doses, variant, stop_at_two_dlts)
    if require_six_at_mtd and not decision.continue_trial and decision.next_dose is not None:
        n = status[decision.next_dose - 1].treated
        if n < MAX_PER_DOSE:
            d = decision.next_dose
            decision = Decision(
                next_dose=d,
                continue_trial=True,
                mtd=None,
                reason=(
                    f"{decision.reason}; but dose {d} has only {n} evaluable participant(s) and the "
                    f"protocol requires {MAX_PER_DOSE} at the MTD: treat {MAX_PER_DOSE - n} more at dose {d}"
                ),
            )
    return decision


def _three_plus_three(
    path: list[Cohort], status: list[DoseStatus], num_doses: int, variant: str, stop_at_two_dlts: bool
) -> Decision:
    # Mirrors escalation::three_plus_three (R/three_plus_three.R) branch by branch.
    if not path:
        return Decision(1, True, None, "no evaluable participants yet: start at dose 1")
    d = path[-1].dose
    n, x = status[d - 1].treated, status[d - 1].dlt
    seen = f"dose {d}: {x}/{n} DLT"

    def stay(why: str) -> Decision:
        return Decision(d, True, None, f"{seen}; {why}")

    def stop(dose: int | None, why: str) -> Decision:
        return Decision(dose, False, dose, f"{seen}; {why}")

    def escalate_or_stop() -> Decision:
        if d == num_doses:
            return stop(d, f"dose {d} is the top dose: stop, recommend dose {d}")
        above = status[d]  # dose d+1
        if above.treated >= MAX_PER_DOSE or above.dlt >= 2:
            return stop(
                d,
                f"dose {d + 1} is closed ({above.dlt}/{above.treated} DLT): stop, recommend dose {d}",
            )
        return Decision(d + 1, True, None, f"{seen}; escalate to dose {d + 1}")

    def too_toxic() -> Decision:
        head = f"dose {d} exceeds the MTD"
        if d == 1:
            return stop(None, f"{head} and it is the lowest dose: stop, no dose recommended")
        if variant == "escalation-only":
            return stop(d - 1, f"{head}: stop, recommend dose {d - 1}")
        below = status[d - 2]
        if below.treated < MAX_PER_DOSE:
            return Decision(
                d - 1,
                True,
                None,
                f"{seen}; {head}: de-escalate to dose {d - 1} ({below.treated} treated) and treat 3 more",
            )
        korn = [s.dose for s in status if s.treated >= MAX_PER_DOSE and s.dlt <= 1]
        if korn:
            return stop(korn[-1], f"{head}: stop, MTD = dose {korn[-1]} (highest dose with >=6 treated and <=1 DLT)")
        return stop(None, f"{head} and no dose has >=6 treated with <=1 DLT: stop, no dose recommended")

    if n > MAX_PER_DOSE:
        raise BeyondThreePlusThree(f"dose {d} has {n} participants; the 3+3 rules stop at {MAX_PER_DOSE} per dose")
    if n < COHORT_SIZE or COHORT_SIZE < n < MAX_PER_DOSE:
        if x >= 2 and stop_at_two_dlts:  # V5: >= 2 DLTs settle the dose; no one else is treated at it
            return too_toxic()
        note = " (>=2 DLT already: the dose will exceed the MTD whatever the rest show)" if x >= 2 else ""
        return stay(f"cohort in progress: continue at dose {d}{note}")
    if n == COHORT_SIZE:
        if x == 0:
            return escalate_or_stop()
        if x == 1:
            return stay(f"treat 3 more at dose {d}")
        return too_toxic()
    # n == 6
    return escalate_or_stop() if x <= 1 else too_toxic()


# --------------------------------------------------------------------------------------------------
# Participant-level records -> decision, as the pipeline needs it


@dataclass(frozen=True)
class ParticipantOutcome:
    """One infused participant as the escalation engine sees it.

    ``evaluable`` is the SAP's DLT-evaluability (domain 1.5): False means excluded and replaced. A
    participant still inside the DLT window without a DLT is expected with ``evaluable=True`` (not
    yet known otherwise) and ``window_open=True``: they are *pending*. A DLT counts at once, even
    while the window is open.
    """

    dose: int  # 1-based dose level
    evaluable: bool
    dlt: bool
    window_open: bool
    window_closes: dt.date | None
    order: int  # infusion order


@dataclass(frozen=True)
class EscalationStatus:
    decision: Decision  # on complete data only
    mature: bool  # False while any participant is pending (the decision may still change)
    current_dose: int | None  # dose of the most recently infused evaluable/pending participant
    doses: tuple[DoseStatus, ...]
    cohorts: tuple[Cohort, ...]  # complete data grouped into cohorts (last one may be in progress)
    pending: int
    window_closes_first: dt.date | None  # among pending participants
    window_closes_last: dt.date | None
    deviations: tuple[str, ...] = field(default=())  # check_path problems (decision made non-strict)
    # False: beyond the 3+3 rules (> 6 at the last dose); the decision is then (None, False, None, why)
    determined: bool = True

    @property
    def outcomes(self) -> str:
        return format_outcomes(self.cohorts)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            **self.decision.to_json_dict(),
            "mature": self.mature,
            "current_dose": self.current_dose,
            "outcomes": self.outcomes,
            "pending": self.pending,
            "window_closes_first": _iso(self.window_closes_first),
            "window_closes_last": _iso(self.window_closes_last),
            "doses": [d.to_json_dict() for d in self.doses],
            "deviations": list(self.deviations),
            "determined": self.determined,
        }


def tally_participants(
    records: Sequence[ParticipantOutcome], num_doses: int, cohort_size: int = COHORT_SIZE
) -> tuple[list[DoseStatus], list[Cohort], int | None, list[dt.date]]:
    """Per-dose counts, the cohorts of complete participants, the current dose and the pending windows.

    Non-evaluable participants are counted as excluded; evaluable ones with a DLT or a closed window
    are complete, the others pending. Complete participants are grouped per dose, in infusion order,
    into cohorts of ``cohort_size``, and the cohorts ordered by their first infusion. Linear in the
    participants.
    """
    doses = [DoseStatus(dose=d, treated=0, dlt=0) for d in range(1, num_doses + 1)]
    complete: dict[int, list[ParticipantOutcome]] = {}
    current_dose: int | None = None
    closes: list[dt.date] = []
    for r in sorted(records, key=lambda r: r.order):
        s = doses[r.dose - 1]
        if not r.evaluable:
            s.excluded += 1
            continue
        current_dose = r.dose
        if r.dlt or not r.window_open:
            s.treated += 1
            s.dlt += int(r.dlt)
            complete.setdefault(r.dose, []).append(r)
        else:
            s.pending += 1
            if r.window_closes is not None:
                c = r.window_closes
                closes.append(c)
                s.window_closes_first = c if s.window_closes_first is None else min(s.window_closes_first, c)
                s.window_closes_last = c if s.window_closes_last is None else max(s.window_closes_last, c)
    grouped: list[tuple[int, Cohort]] = []
    for dose, rs in complete.items():
        for i in range(0, len(rs), cohort_size):
            chunk = rs[i : i + cohort_size]
            grouped.append((chunk[0].order, Cohort(dose, tuple(p.dlt for p in chunk))))
    cohorts = [c for _, c in sorted(grouped, key=lambda t: t[0])]
    return doses, cohorts, current_dose, closes


def decide_from_participants(
    records: Sequence[ParticipantOutcome],
    num_doses: int,
    variant: str = "escalation-only",
    require_six_at_mtd: bool = False,
    *,
    cohort_size: int = COHORT_SIZE,
    stop_at_two_dlts: bool = False,
) -> EscalationStatus:
    """Escalation status from participant records.

    Non-evaluable participants are left out (they are replaced). Evaluable participants with a DLT
    or a closed window are *complete*; the others are *pending*. Complete participants are grouped
    per dose, in infusion order, into cohorts of ``cohort_size`` (a trailing partial cohort is in
    progress) and the cohorts are ordered by their first infusion, so :func:`recommend` sees the
    trial's path. Departures from a valid 3+3 path are reported in ``deviations`` rather than raised,
    so that a DSMB report can still be produced; the decision is then computed non-strictly. When the
    rules give no decision at all (:class:`BeyondThreePlusThree`), the status has ``determined=False``
    and a decision without next dose or MTD whose reason names the first deviations.
    """
    _check_args(num_doses, variant)
    if cohort_size != COHORT_SIZE:
        raise EscalationError(f"cohort_size {cohort_size} is not supported: the engine implements the 3+3 rules")
    for r in records:
        if not 1 <= r.dose <= num_doses:
            raise EscalationError(f"participant with infusion order {r.order}: dose {r.dose} is outside 1..{num_doses}")

    doses, cohorts, current_dose, closes = tally_participants(records, num_doses, cohort_size)
    deviations = tuple(check_path(cohorts, num_doses, variant, require_six_at_mtd))
    pending = sum(s.pending for s in doses)
    mature = pending == 0
    determined = True
    try:
        decision = recommend(cohorts, num_doses, variant, require_six_at_mtd, strict=False,
                             stop_at_two_dlts=stop_at_two_dlts)
    except BeyondThreePlusThree as exc:
        determined = False
        decision = Decision(None, False, None, _undetermined_reason(deviations, exc))
    if determined and not mature:
        where = ", ".join(f"{s.pending} at dose {s.dose}" for s in doses if s.pending)
        when = ""
        if closes:
            first, last = min(closes), max(closes)
            when = f", closing {first.isoformat()}" + (f" to {last.isoformat()}" if last != first else "")
        decision = Decision(
            decision.next_dose,
            decision.continue_trial,
            decision.mtd,
            f"{decision.reason} [on complete data; decision awaits DLT window closure of "
            f"{pending} participant(s) ({where}){when}]",
        )
    return EscalationStatus(
        decision=decision,
        mature=mature,
        current_dose=current_dose,
        doses=tuple(doses),
        cohorts=tuple(cohorts),
        pending=pending,
        window_closes_first=min(closes) if closes else None,
        window_closes_last=max(closes) if closes else None,
        deviations=deviations,
        determined=determined,
    )


def _undetermined_reason(deviations: Sequence[str], error: BeyondThreePlusThree) -> str:
    # check_path lists the doses with more than 6 first, so they lead the reason.
    shown = "; ".join(deviations[:MAX_DEVIATIONS_SHOWN]) or str(error)
    more = len(deviations) - MAX_DEVIATIONS_SHOWN
    return (
        f"no 3+3 decision: the participants treated do not follow a 3+3 path ({shown}"
        f"{f'; and {more} more' if more > 0 else ''}); the next step is for the DSMB to decide on the data"
    )


def pending_branches(
    records: Sequence[ParticipantOutcome], num_doses: int, **rules: Any
) -> tuple[Decision | None, Decision | None]:
    """What the open DLT windows decide: the decision if every pending participant completes the
    window without a DLT, and if the first of them (infusion order) has one. (None, None) when no
    window is open; None for a branch the 3+3 rules cannot decide. ``rules``: the keyword arguments
    of :func:`decide_from_participants` (variant, require_six_at_mtd, cohort_size, stop_at_two_dlts)."""
    pending = sorted((r for r in records if r.evaluable and not r.dlt and r.window_open), key=lambda r: r.order)
    if not pending:
        return None, None

    waiting = {r.order for r in pending}

    def decide(first_has_dlt: bool) -> Decision | None:
        resolved = [
            replace(r, window_open=False, dlt=first_has_dlt and r.order == pending[0].order)
            if r.order in waiting else r
            for r in records
        ]
        status = decide_from_participants(resolved, num_doses, **rules)
        return status.decision if status.determined else None

    return decide(False), decide(True)


# --------------------------------------------------------------------------------------------------
# Command line: python -m pipelines escalate --doses N --variant V [--require-six-at-mtd] [--no-strict] OUTCOMES


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits; the CLI contract is a one-line error and exit status 2.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cli_escalate(argv: list[str]) -> int:
    """Print the 3+3 decision as JSON (keys next_dose, continue, mtd, reason); 2 on invalid input."""
    parser = _Parser(
        prog="python -m pipelines escalate",
        description="3+3 dose-escalation decision for outcomes such as '1NNN 2NTN' (T = DLT, N = no DLT).",
    )
    parser.add_argument("--doses", type=_positive_int, required=True, help="number of dose levels")
    parser.add_argument("--variant", choices=VARIANTS, default="escalation-only")
    parser.add_argument("--require-six-at-mtd", action="store_true", help="expand a dose to 6 before declaring it the MTD")
    parser.add_argument("--no-strict", action="store_true", help="accept paths that break the 3+3 rules")
    # Several words are joined, so an unquoted "1NNN 2NTN" works as well.
    parser.add_argument("outcomes", nargs="*", metavar="OUTCOMES", help="e.g. '1NNN 2NTN'; empty for none")
    try:
        args = parser.parse_args(argv)
        decision = recommend(
            " ".join(args.outcomes),
            num_doses=args.doses,
            variant=args.variant,
            require_six_at_mtd=args.require_six_at_mtd,
            strict=not args.no_strict,
        )
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (_ArgError, EscalationError) as exc:
        print(f"escalate: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(decision.to_json_dict()))
    return 0
