"""The safety overviews counted from ADAE on the simulated demo (conftest ``rules_con``): the
lymphodepletion-period overview (analysis.ld_ae_summary) beside the TEAE overview."""

from __future__ import annotations

from clinical.adae import build_adae
from clinical.safety_tables import build_safety_tables


def _summary(con, table):
    return {(r, d): (n, denom) for r, d, n, denom in con.execute(
        f"SELECT ROWN, DOSE, N, DENOM FROM analysis.{table}").fetchall()}


def test_lymphodepletion_adverse_events_are_counted_apart_from_the_teaes(rules_con):
    """The demo's 19 adverse events in 11 of the 13 infused participants that started during
    lymphodepletion (the chemotherapy's lymphocyte and neutrophil decreases among them): the values
    the DSMB table shows, and the same counts read straight from ADAE."""
    build_safety_tables(rules_con)
    got = _summary(rules_con, "ld_ae_summary")
    assert {d: got[(1, d)] for d in ("DL1", "DL2", "DL3", "TOTAL")} == {
        "DL1": (3, 4), "DL2": (5, 6), "DL3": (3, 3), "TOTAL": (11, 13)}
    assert {d: got[(2, d)][0] for d in ("DL1", "DL2", "DL3", "TOTAL")} == {"DL1": 2, "DL2": 4, "DL3": 3, "TOTAL": 9}
    assert {got[(3, d)][0] for d in ("DL1", "DL2", "DL3", "TOTAL")} == {0}  # none serious
    assert {d: got[(5, d)] for d in ("DL1", "DL2", "DL3", "TOTAL")} == {
        "DL1": (5, None), "DL2": (8, None), "DL3": (6, None), "TOTAL": (19, None)}
    direct = rules_con.execute(
        """SELECT count(DISTINCT SUBJID), count(DISTINCT SUBJID) FILTER (WHERE ATOXGR >= 3), count(*)
           FROM analysis.adae a JOIN analysis.adsl s USING (SUBJID)
           WHERE s.SAFFL = 'Y' AND a.ASTDT >= s.LDSTDT AND a.ASTDT < s.TRTSDT""").fetchone()
    assert direct == (got[(1, "TOTAL")][0], got[(2, "TOTAL")][0], got[(5, "TOTAL")][0])


def test_with_lymphodepletion_as_the_anchor_they_are_teaes(rules_con, cfg):
    """safety.treatment_emergent_anchor = lymphodepletion_start: the same 19 events move into the TEAE
    overview and the lymphodepletion overview counts none."""
    build_safety_tables(rules_con)
    teae_events = _summary(rules_con, "teae_summary")[(11, "TOTAL")][0]
    ld = cfg.model_copy(update={"safety": cfg.safety.model_copy(update={"treatment_emergent_anchor": "lymphodepletion_start"})})
    build_adae(rules_con, ld)
    build_safety_tables(rules_con)
    assert {n for (_, _), (n, _) in _summary(rules_con, "ld_ae_summary").items()} == {0}
    assert _summary(rules_con, "teae_summary")[(11, "TOTAL")][0] == teae_events + 19
