"""The study configuration loads, and an invalid one fails at load naming the key."""

from pathlib import Path

import pytest
import yaml

from clinical.study import StudyConfigError, load_study

ROOT = Path(__file__).resolve().parent.parent
IM83 = ROOT / "studies" / "im83.yaml"


def test_im83_loads_with_protocol_values():
    cfg = load_study(IM83)
    assert cfg.study.nct_id == "NCT06412458"
    assert cfg.study.protocol_id == "IM83-002"
    assert cfg.study.time_zone == "Asia/Shanghai"
    assert [(d.id, d.cells) for d in cfg.dose_levels] == [("DL1", 5e8), ("DL2", 1e9), ("DL3", 2e9)]
    assert cfg.escalation.dlt_window_days == 28
    assert [(a.name, a.dose) for a in cfg.lymphodepletion.agents] == [("FLUDARABINE", 30), ("CYCLOPHOSPHAMIDE", 300)]
    assert (cfg.lymphodepletion.start_day, cfg.lymphodepletion.end_day) == (-5, -3)
    assert {c.id for c in cfg.eligibility} == {
        "AGE", "GPC3", "KPS", "ANC", "LYM", "LYMPCT", "PLAT", "HGB", "CRCL", "BILI", "ALT", "AST", "PT", "LVEF", "SPO2"
    }
    alt = next(c for c in cfg.eligibility if c.id == "ALT")
    assert (alt.value, alt.value_liver_metastases, alt.basis) == (2.5, 5, "xuln")
    assert [v.day for v in cfg.visits if v.id in ("D0", "D28", "M12")] == [0, 28, 365]
    assert cfg.safety.treatment_emergent_anchor == "infusion"
    assert len(cfg.config_sha256) == 64


def _write(tmp_path, mutate):
    data = yaml.safe_load(IM83.read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d["escalation"].update(variant="bayesian"), "escalation.variant"),
        (lambda d: d["study"].update(time_zone="Mars/Olympus"), "study.time_zone"),
        (lambda d: d["study"].update(nct_id="NCT123"), "study.nct_id"),
        (lambda d: d["escalation"].pop("dlt_window_days"), "escalation.dlt_window_days"),
        (lambda d: d["safety"].update(treatment_emergent_anchor="consent"), "safety.treatment_emergent_anchor"),
        (lambda d: d["escalation"].update(dlt_windw_days=28), "escalation.dlt_windw_days"),
        (lambda d: d["dose_levels"][0].update(cells=-1), "dose_levels.0.cells"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, mutate, key):
    path = _write(tmp_path, mutate)
    with pytest.raises(StudyConfigError) as err:
        load_study(path)
    assert f"{path}: {key}:" in str(err.value)


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_studies_load(path):
    cfg = load_study(path)
    assert cfg.eligibility and cfg.screening_visit in [v.id for v in cfg.visits]


def _criterion(data, crit_id):
    return next(c for c in data["eligibility"] if c["id"] == crit_id)


# Eligibility mistakes fail at load, not when the eligibility table is derived (clinical/eligibility.py).
# im83.yaml: eligibility.1 is GPC3 (sc, coded), .2 KPS (sc), .3 ANC (lb NEUT).
@pytest.mark.parametrize(
    "mutate, key, message",
    [
        (lambda d: _criterion(d, "KPS").update(param="KPX"), "eligibility.2.param",
         "criterion KPS: 'KPX' is not a field of the sc form"),
        (lambda d: _criterion(d, "ANC").update(param="NUET"), "eligibility.3.param",
         "criterion ANC: 'NUET' is not a lab test of the lb form"),
        (lambda d: _criterion(d, "GPC3").update(op=">="), "eligibility.1.value",
         "criterion GPC3: a coded value ('POSITIVE') needs op '=='"),
        (lambda d: _criterion(d, "KPS").update(basis="xuln"), "eligibility.2.basis",
         "criterion KPS: basis 'xuln' needs source 'lb'"),
        (lambda d: _criterion(d, "KPS").update(source="sx"), "eligibility.2.source", "'dm', 'sc' or 'lb'"),
        (lambda d: _criterion(d, "KPS").update(vaule=60), "eligibility.2.vaule", "Extra inputs are not permitted"),
        (lambda d: d.update(screening_visit="SCREENNG"), "screening_visit", "'SCREENNG' is not a visit id"),
    ],
)
def test_invalid_eligibility_fails_at_load_naming_the_setting(tmp_path, mutate, key, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(StudyConfigError) as err:
        load_study(path)
    assert f"{path}: {key}:" in str(err.value)
    assert message in str(err.value)


def test_numeric_text_value_may_use_a_comparison(tmp_path):
    # "60" is a number written as text: compared as a number, as at derive time.
    cfg = load_study(_write(tmp_path, lambda d: _criterion(d, "KPS").update(value="60")))
    assert next(c for c in cfg.eligibility if c.id == "KPS").value == "60"


def test_dose_levels_must_ascend(tmp_path):
    path = _write(tmp_path, lambda d: d["dose_levels"].reverse())
    with pytest.raises(StudyConfigError, match="lowest to highest"):
        load_study(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(StudyConfigError, match="cannot read"):
        load_study(tmp_path / "nope.yaml")
