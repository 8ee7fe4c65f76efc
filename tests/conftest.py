"""Shared fixtures: the demo export simulated once per session and run once through Dagster."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from clinical.simulate import simulate, write_export, write_truth
from clinical.study import StudyConfig, load_study

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "im83.yaml"
DEMO_SEED = 83
DEMO_CUT = "2025-12-31"


@dataclass(frozen=True)
class DemoRun:
    cfg: StudyConfig
    export: Path
    out: Path
    final: Path
    truth: dict
    returncode: int


@pytest.fixture(scope="session")
def cfg() -> StudyConfig:
    return load_study(STUDY)


@pytest.fixture(scope="session")
def rules_db(tmp_path_factory) -> Path:
    """The simulated demo export loaded and derived without Dagster (tests/test_rules.build_fixture_db),
    built once per session. Read-only for everyone: copy it before changing it."""
    from test_rules import build_fixture_db

    return build_fixture_db(tmp_path_factory.mktemp("rules_db") / "clean.duckdb", load_study(STUDY))


@pytest.fixture
def rules_con(rules_db, tmp_path):
    """A connection to a copy of :func:`rules_db`, for a test that changes it."""
    import duckdb

    path = tmp_path / "trial.duckdb"
    shutil.copyfile(rules_db, path)
    con = duckdb.connect(str(path))
    yield con
    con.close()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, cfg) -> DemoRun:
    """The demo export (seed 83, data cut 2025-12-31) run through the whole Dagster job."""
    import datetime as dt
    import json

    from pipelines.run import run_export

    base = tmp_path_factory.mktemp("demo")
    trial = simulate(cfg, seed=DEMO_SEED, data_cut=dt.date.fromisoformat(DEMO_CUT))
    write_export(trial, base / "export")
    write_truth(trial, base / "truth.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)  # an ephemeral Dagster instance per test session
        rc = run_export(str(STUDY), str(base / "export"), str(base / "out"), DEMO_CUT)
    return DemoRun(
        cfg=cfg,
        export=base / "export",
        out=base / "out",
        final=base / "out" / cfg.study.id / DEMO_CUT,
        truth=json.loads((base / "truth.json").read_text()),
        returncode=rc,
    )


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        os.chmod(p, 0o644)
    return dst


IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when something outside the repository (shared data, a browser, a server) is absent, but
    fail in CI, where .ci/run guarantees it."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
