"""``python -m pipelines bench``: the whole pipeline at scale, timed per stage, against DuckDB's own load time.

    python -m pipelines bench --participants 10000 [--out bench/bench_10000.json]
    python -m pipelines bench --demo                  # the 18-participant demo export (3+3 mode)

One benchmark is four steps, each in its own process so that nothing of one inflates another's memory:

1. **Export.** A benchmark study configuration is written from ``studies/im83.yaml`` with enough
   sites for N participants (999 per site, as the SUBJID pattern allows), and ``clinical.simulate``
   writes the export of N screened participants (benchmark mode: round-robin cohorts, labs at every
   visit, AEs, PK samples) with seed 83 and data cut 2025-12-31. Not timed as part of the pipeline.
2. **Floor.** DuckDB loads every export file into a table once (``CREATE TABLE f AS SELECT * FROM
   read_csv('f.csv')``, nothing else) into a fresh database file in the same folder; three times,
   the median is ``floor_s``. The page cache is warm for the floor as for the pipeline.
3. **Pipeline.** A fresh ``python`` process imports the code location and calls
   ``pipelines.run.run_export`` -- what ``python -m pipelines run`` does: study lock, ``trial_job``
   through ``execute_in_process`` (in-process executor), audit log -- with a Dagster instance of its
   own: SQLite storage in a scratch ``DAGSTER_HOME`` with ``pipelines/dagster.yaml``, as ``make run``
   and the nightly schedule use (``--instance ephemeral``: in memory); the home's databases are
   created before the clock starts, as they exist for every nightly run. As in the CLI, the Great
   Expectations worker process starts before the code location is imported. ``total_s`` is the wall
   time of ``run_export``; ``startup_s`` (imports, code location) and ``process_s`` (the whole
   process, interpreter start to exit, measured by the parent) are reported next to it.
4. **Report.** JSON (``--out``) and a table on stdout; ``python -m pipelines.bench --table
   bench/bench_*.json`` prints the Markdown table of docs/performance.md.

CPU time is recorded next to wall time (per stage, the run, the floor), and the 1-minute load
average before and after: on a shared machine the wall times of both the floor and the run grow
with other processes' load, the CPU seconds much less.

Stages. The in-process executor runs one step at a time; each step's wall time is read from the
run's event log (STEP_START to STEP_SUCCESS/FAILURE), and the gap since the previous step ended
(Dagster's own bookkeeping between steps) is charged to the step that follows, so the stages add up
to the run. A step belongs to a stage by what it computes:

* ``ingest``: the export snapshot and the raw/stage/quarantine tables (asset groups export, ingest);
* ``validate``: every asset-check step (Great Expectations suites, quarantine checks, cross-form rules);
* ``derive``: the analysis tables (asset group derive);
* ``report``: the deliverables and the manifest (asset group report).

``orchestration_s`` is what remains of the run outside any step (lock, run start, resource set-up,
run end, audit log).
Peak memory and CPU: a thread of the benchmark's parent process (not of the measured one, whose
interpreter lock it would contend for) samples the resident set size and CPU time of the pipeline
process and of its child processes (the Great Expectations worker,
``clinical.expectation_runner.SuiteWorker``) every 10 ms; a stage's ``peak_rss_mb`` is the highest
sample while its steps ran; the run's ``peak_rss_mb``
is the higher of the kernel's high-water mark (``VmHWM``) of the pipeline process, imports included,
and the sampled peak of the process and its children together. CPU seconds include the children.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_STUDY = REPO_ROOT / "studies" / "im83.yaml"
SEED = 83
DATA_CUT = "2025-12-31"
STAGES = ("ingest", "validate", "derive", "report")
PER_SITE = 999  # SUBJID pattern ss-nnn
FLOOR_REPEATS = 3
SAMPLE_S = 0.01

# The targets, at N = 10,000 on 2 cores / 24 GB (the demo target on the demo export).
TARGET_IVD_X_FLOOR = 4.0
TARGET_TOTAL_X_FLOOR = 6.0
TARGET_PEAK_RSS_MB = 3072
TARGET_DEMO_S = 15.0


# ---------------------------------------------------------------------------------------------
# Export and floor


def bench_study_config(n: int | None, dest: Path, base: Path = BASE_STUDY) -> Path:
    """``base`` with enough sites for ``n`` participants (ids "02", "03"... as the simulator numbers them)."""
    import yaml

    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    sites = doc["study"]["sites"]
    need = max(len(sites), math.ceil((n or 0) / PER_SITE))
    for i in range(len(sites), need):
        # The simulator numbers extra sites after the configured ones: site i+1, two digits.
        sites.append({"id": f"{i + 1:02d}", "name": f"Benchmark site {i + 1:02d}", "country": sites[0]["country"]})
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        "# Generated by pipelines/bench.py from studies/im83.yaml: the same study with enough sites for the benchmark.\n"
        + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return dest


def export_size(export: Path) -> dict:
    files = {}
    for p in sorted(export.glob("*.csv")):
        with p.open("rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        files[p.name] = {"rows": max(lines - 1, 0), "bytes": p.stat().st_size}
    return {
        "rows": sum(f["rows"] for f in files.values()),
        "bytes": sum(f["bytes"] for f in files.values()),
        "files": files,
    }


FLOOR_SCRIPT = """
import sys, time, pathlib, duckdb
export, db = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
db.unlink(missing_ok=True)
t, c = time.perf_counter(), time.process_time()
con = duckdb.connect(str(db))
for p in sorted(export.glob("*.csv")):
    con.execute(f"CREATE TABLE {p.stem} AS SELECT * FROM read_csv('{p}')")
con.close()
print(time.perf_counter() - t, time.process_time() - c)
db.unlink()
"""


def measure_floor(export: Path, work: Path, repeats: int = FLOOR_REPEATS) -> list[tuple[float, float]]:
    """DuckDB loading every export file into a table once, in a fresh process and database each
    time: [(wall seconds, CPU seconds)] per repeat."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", FLOOR_SCRIPT, str(export), str(work / "floor.duckdb")],
            check=True, capture_output=True, text=True,
        )
        wall, cpu = out.stdout.strip().splitlines()[-1].split()
        runs.append((float(wall), float(cpu)))
    return runs


# ---------------------------------------------------------------------------------------------
# The pipeline process


def _children(pid: int | str = "self") -> list[int]:
    """Live child processes of ``pid`` (all its threads' children), recursively."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                kids = [int(x) for x in fh.read().split()]
        except OSError:
            continue
        for kid in kids:
            out.append(kid)
            out.extend(_children(kid))
    return out


def _proc_rss_cpu(pid: int, page: int, tick: float, waited: bool = False) -> tuple[int, float]:
    """(resident bytes, user+system CPU seconds) of a live process -- with ``waited``, plus those of
    its children it has already waited for; (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            rss = int(fh.read().split()[1]) * page
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if waited else 0)
        return rss, ticks / tick
    except (OSError, IndexError, ValueError):
        return 0, 0.0


class RssSampler(threading.Thread):
    """Samples the resident set size and CPU time of the process ``pid`` *and its child processes*
    (the Great Expectations worker) every ``interval`` seconds: [(time.time(), rss
    bytes, CPU seconds)]. It runs in the benchmark's parent process, so that measuring takes no
    time from the measured process (a sampling thread inside it held its interpreter lock ~10 % of
    the run). CPU is user+system of all threads of ``pid``, plus that of its live descendants, plus
    that of children it already waited for; RSS is the process's plus its live descendants'."""

    def __init__(self, pid: int, interval: float = SAMPLE_S) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []
        self._stop_event = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._tick = float(os.sysconf("SC_CLK_TCK"))

    def sample(self) -> tuple[float, int, float] | None:
        when = time.time()
        rss, cpu = _proc_rss_cpu(self.pid, self._page, self._tick, waited=True)
        if not rss:
            return None  # the process has exited
        for kid in _children(self.pid):
            kid_rss, kid_cpu = _proc_rss_cpu(kid, self._page, self._tick)
            rss += kid_rss
            cpu += kid_cpu
        return when, rss, cpu

    def run(self) -> None:
        while not self._stop_event.is_set():
            sample = self.sample()
            if sample is not None:
                self.samples.append(sample)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak_between(self, start: float, end: float) -> int:
        inside = [b for t, b, _ in self.samples if start <= t <= end]
        return max(inside, default=0)

    def cpu_at(self, when: float) -> float:
        """CPU seconds used by the process (and its children) up to the last sample at or before ``when``."""
        before = [c for t, _, c in self.samples if t <= when]
        return before[-1] if before else 0.0


def vm_hwm_bytes() -> int:
    """The kernel's peak resident set size of this process (VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def stage_of_steps(defs) -> dict[str, str]:
    """Step key -> stage for every asset step of the code location (steps not listed are check
    steps). A step that writes several assets (``@multi_asset``) is named after its op."""
    by_group = {"export": "ingest", "ingest": "ingest", "derive": "derive", "report": "report"}
    out = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if not assets_def.keys or not assets_def.is_executable:
            continue  # external sources (the export files) and check-only definitions
        groups = {by_group.get(g or "", g or "other") for g in assets_def.group_names_by_key.values()}
        out[assets_def.node_def.name] = next(iter(groups)) if len(groups) == 1 else "/".join(sorted(groups))
    return out


def _child(args: argparse.Namespace) -> int:
    """Run the pipeline once in this process, as ``python -m pipelines run`` does, and write its
    timings: the run's start and end and each step's, from the run's event log (called in a fresh
    process; the parent samples its memory and CPU)."""
    t0 = time.perf_counter()
    if args.instance == "sqlite":
        # A Dagster home of its own with the project's instance settings: SQLite run and event
        # storage, as `make run` (DAGSTER_HOME=.dagster_home) and the nightly schedule use.
        home = Path(args.output).resolve().parent / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "pipelines" / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    else:
        os.environ.pop("DAGSTER_HOME", None)
    import dagster as dg

    from clinical.expectation_runner import start_worker
    from pipelines import run as run_module

    # As `python -m pipelines run` does: the Great Expectations worker starts (and imports GX in its
    # own process) before the code location loads; run_export finds it running.
    start_worker()
    from pipelines.definitions import defs

    # The instance the run is recorded in, opened once: kept open to read the run's event log
    # afterwards, then disposed.
    instance = dg.DagsterInstance.ephemeral() if args.instance == "ephemeral" else dg.DagsterInstance.get()
    if args.instance == "sqlite":
        # The Dagster home of a nightly run exists: its run, schedule and event-index databases are
        # created here, before the clock (a first-ever run pays ~0.5 s more; docs/performance.md).
        instance.get_runs(limit=1)
    steps_stage = stage_of_steps(defs)
    startup_s = time.perf_counter() - t0
    try:
        run_start = time.time()
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            code = run_module.run_export(args.study, args.export, args.output, args.data_cut, instance=instance)
        total_s = time.perf_counter() - t1
        run_end = time.time()
        records = instance.get_runs(limit=1)
        run_id = records[0].run_id if records else None
        logs = instance.all_logs(run_id) if run_id else []
    finally:
        instance.dispose()
    steps = []
    starts: dict[str, float] = {}
    for entry in logs:
        ev = entry.dagster_event
        if ev is None or ev.step_key is None:
            continue
        if ev.event_type_value == "STEP_START":
            starts[ev.step_key] = entry.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in starts:
            steps.append({
                "step": ev.step_key,
                "stage": steps_stage.get(ev.step_key, "validate"),
                "start": starts[ev.step_key],
                "end": entry.timestamp,
                "ok": ev.event_type_value == "STEP_SUCCESS",
            })
    steps.sort(key=lambda s: s["start"])
    doc = {
        "success": code == 0,
        "exit_code": code,
        "dagster_instance": args.instance,
        "dagster_events": sum(1 for e in logs if e.dagster_event is not None),
        "startup_s": round(startup_s, 3),
        "total_s": round(total_s, 3),
        "run_start": run_start,
        "run_end": run_end,
        "vm_hwm_bytes": vm_hwm_bytes(),
        "steps": steps,
    }
    Path(args.result).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return code


def stage_figures(child: dict, sampler: RssSampler) -> dict:
    """Per stage and per step: wall time from the child's step timings; CPU and peak memory from
    the parent's samples of the child's process tree. The gap before a step (Dagster's bookkeeping
    between steps, and before the first one the run start) is charged to that step, so the stages
    add up to the run."""
    stages = {name: {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0, "steps": 0} for name in STAGES}
    steps = []
    previous_end = child["run_start"]
    for s in child["steps"]:
        st = stages.setdefault(s["stage"], {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0, "steps": 0})
        st["wall_s"] += s["end"] - previous_end
        st["cpu_s"] += sampler.cpu_at(s["end"]) - sampler.cpu_at(previous_end)
        st["steps"] += 1
        st["peak_rss_mb"] = max(st["peak_rss_mb"], sampler.peak_between(previous_end, s["end"]) / 2**20)
        steps.append({
            "step": s["step"], "stage": s["stage"], "ok": s["ok"],
            "wall_s": round(s["end"] - s["start"], 4),
            "cpu_s": round(sampler.cpu_at(s["end"]) - sampler.cpu_at(s["start"]), 3),
            "gap_s": round(s["start"] - previous_end, 4),
            "peak_rss_mb": round(sampler.peak_between(s["start"], s["end"]) / 2**20, 1),
        })
        previous_end = s["end"]
    for st in stages.values():
        st["wall_s"] = round(st["wall_s"], 3)
        st["cpu_s"] = round(st["cpu_s"], 2)
        st["peak_rss_mb"] = round(st["peak_rss_mb"], 1)
    run_start, run_end = child["run_start"], child["run_end"]
    return {
        "total_cpu_s": round(sampler.cpu_at(run_end + 1) - sampler.cpu_at(run_start), 2),
        "orchestration_s": round(child["total_s"] - sum(st["wall_s"] for st in stages.values()), 3),
        # The kernel's high-water mark of the pipeline process, or the sampled peak of the process
        # and its children together (the Great Expectations worker), whichever is higher.
        # (The sampled peak of the run alone is not reported: the result document never had it.)
        "peak_rss_mb": round(max(child["vm_hwm_bytes"], sampler.peak_between(0, run_end + 1)) / 2**20, 1),
        "stages": stages,
        "steps": steps,
        "failed_steps": [s["step"] for s in steps if not s["ok"]],
    }


# ---------------------------------------------------------------------------------------------
# One benchmark


def _targets(doc: dict, demo: bool) -> dict:
    floor = doc["floor_s"]
    ivd = sum(doc["stages"][s]["wall_s"] for s in ("ingest", "validate", "derive"))
    if demo:
        return {"demo_process_s": {"value": doc["process_s"], "limit": TARGET_DEMO_S,
                                   "met": doc["process_s"] < TARGET_DEMO_S}}
    return {
        "ingest_validate_derive_x_floor": {"value": round(ivd / floor, 2), "limit": TARGET_IVD_X_FLOOR,
                                           "met": ivd <= TARGET_IVD_X_FLOOR * floor},
        "total_x_floor": {"value": round(doc["total_s"] / floor, 2), "limit": TARGET_TOTAL_X_FLOOR,
                          "met": doc["total_s"] <= TARGET_TOTAL_X_FLOOR * floor},
        "peak_rss_mb": {"value": doc["peak_rss_mb"], "limit": TARGET_PEAK_RSS_MB,
                        "met": doc["peak_rss_mb"] < TARGET_PEAK_RSS_MB},
    }


def run_bench(participants: int | None, work: Path, seed: int = SEED, data_cut: str = DATA_CUT,
              log=print, instance: str = "sqlite", floor_repeats: int = FLOOR_REPEATS) -> dict:
    """Simulate, measure the floor, run the pipeline; the result document (see module docstring)."""
    from clinical.simulate import simulate, write_export
    from clinical.study import load_study

    demo = participants is None
    work.mkdir(parents=True, exist_ok=True)
    study = BASE_STUDY if demo else bench_study_config(participants, work / "bench_study.yaml")
    export = work / "export"
    log(f"bench: simulating {'the demo export' if demo else f'{participants:,} participants'} -> {export}")
    t = time.perf_counter()
    trial = simulate(load_study(study), seed, dt.date.fromisoformat(data_cut), participants=participants)
    screened = trial.truth["counts"]["screened"]
    write_export(trial, export)
    del trial
    simulate_s = time.perf_counter() - t
    size = export_size(export)
    log(f"bench: export {size['rows']:,} rows, {size['bytes'] / 1e6:.1f} MB; measuring the floor")
    load_before = os.getloadavg()
    floor_runs = measure_floor(export, work, floor_repeats)
    floor_s = statistics.median(w for w, _ in floor_runs)
    log(f"bench: floor {floor_s:.2f} s; running the pipeline")
    result_file = work / "pipeline.json"
    t = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.bench", "--child", "--study", str(study), "--export", str(export),
             "--output", str(work / "output"), "--data-cut", data_cut, "--result", str(result_file),
             "--instance", instance],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=errors,
        )
        sampler = RssSampler(proc.pid)
        sampler.start()
        proc.wait()
        process_s = time.perf_counter() - t
        sampler.stop()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    load_after = os.getloadavg()
    if not result_file.is_file():
        raise RuntimeError(f"pipeline process failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    child = json.loads(result_file.read_text(encoding="utf-8"))
    figures = stage_figures(child, sampler)
    doc = {
        "participants": screened,
        "mode": "demo (3+3)" if demo else "benchmark",
        "seed": seed,
        "data_cut": data_cut,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "success": child["success"],
        "dagster_instance": child["dagster_instance"],
        "dagster_events": child["dagster_events"],
        "export_rows": size["rows"],
        "export_bytes": size["bytes"],
        "export_files": size["files"],
        "simulate_s": round(simulate_s, 2),
        "floor_s": round(floor_s, 3),
        "floor_runs_s": [round(w, 3) for w, _ in floor_runs],
        "floor_cpu_s": round(statistics.median(c for _, c in floor_runs), 3),
        # Other processes on the machine: 1-minute load average before the floor and after the run.
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "total_s": child["total_s"],
        "total_cpu_s": figures["total_cpu_s"],
        "startup_s": child["startup_s"],
        "process_s": round(process_s, 3),
        "orchestration_s": figures["orchestration_s"],
        "peak_rss_mb": figures["peak_rss_mb"],
        "stages": figures["stages"],
        "steps": figures["steps"],
    }
    if not child["success"]:
        doc["failed_steps"] = figures["failed_steps"]
        doc["stderr_tail"] = stderr[-4000:]
    doc["targets"] = _targets(doc, demo)
    return doc


def format_table(docs: list[dict]) -> str:
    head = f"{'participants':>12} {'stage':<14} {'wall s':>8} {'x floor':>8} {'peak RSS MB':>12}"
    lines = [head, "-" * len(head)]
    for d in docs:
        floor = d["floor_s"]
        n = f"{d['participants']:,}"
        lines.append(f"{n:>12} {'floor (DuckDB)':<14} {floor:8.2f} {1:8.2f} {'':>12}")
        for name, st in d["stages"].items():
            lines.append(f"{'':>12} {name:<14} {st['wall_s']:8.2f} {st['wall_s'] / floor:8.2f} {st['peak_rss_mb']:12.0f}")
        ivd = sum(d["stages"][s]["wall_s"] for s in ("ingest", "validate", "derive"))
        lines.append(f"{'':>12} {'ing+val+der':<14} {ivd:8.2f} {ivd / floor:8.2f} {'':>12}")
        lines.append(f"{'':>12} {'orchestration':<14} {d['orchestration_s']:8.2f} {'':>8} {'':>12}")
        lines.append(f"{'':>12} {'total':<14} {d['total_s']:8.2f} {d['total_s'] / floor:8.2f} {d['peak_rss_mb']:12.0f}")
        lines.append(f"{'':>12} {'process':<14} {d['process_s']:8.2f} {'':>8} {'':>12}   (imports {d['startup_s']:.2f} s)")
        lines.append(
            f"{'':>12} export {d['export_rows']:,} rows, {d['export_bytes'] / 1e6:.1f} MB; {d['cores']} cores; "
            + "; ".join(f"{k} {v['value']} (limit {v['limit']}) {'met' if v['met'] else 'NOT MET'}"
                        for k, v in d["targets"].items())
        )
        if not d["success"]:
            lines.append(f"{'':>12} RUN FAILED: {', '.join(d.get('failed_steps', []))}")
    return "\n".join(lines)


def cli_bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines bench", description=__doc__.split("\n")[0])
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--participants", type=int, help="N screened participants (simulator benchmark mode)")
    who.add_argument("--demo", action="store_true", help="the 18-participant demo export (3+3 mode)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default bench/bench_<N>.json, bench/bench_demo.json)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--data-cut", default=DATA_CUT)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the export, databases and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--instance", choices=("sqlite", "ephemeral"), default="sqlite",
                        help="Dagster instance of the run: SQLite storage in its own DAGSTER_HOME, as `make run` "
                        "(default), or in memory")
    parser.add_argument("--floor-repeats", type=int, default=FLOOR_REPEATS, help="floor measurements (median)")
    args = parser.parse_args(argv)
    if args.participants is not None and args.participants < 1:
        parser.error("--participants must be at least 1")
    out = args.out or REPO_ROOT / "bench" / f"bench_{'demo' if args.demo else args.participants}.json"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="im83-bench-"))
    try:
        doc = run_bench(None if args.demo else args.participants, work, args.seed, args.data_cut,
                        log=lambda m: print(m, file=sys.stderr), instance=args.instance,
                        floor_repeats=max(1, args.floor_repeats))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(format_table([doc]))
    print(f"bench: results in {out}")
    if not doc["success"]:
        print(doc.get("stderr_tail", ""), file=sys.stderr)
        return 1
    return 0


def markdown_table(docs: list[dict]) -> str:
    """The figures of several runs as the Markdown table of docs/performance.md."""
    docs = sorted(docs, key=lambda d: d["participants"])
    head = ["", *[f"N = {d['participants']:,}" for d in docs]]
    rows = [
        ["export rows / MB", *[f"{d['export_rows']:,} / {d['export_bytes'] / 1e6:.1f}" for d in docs]],
        ["floor (DuckDB load) s", *[f"{d['floor_s']:.2f}" for d in docs]],
    ]
    for stage in STAGES:
        rows.append([f"{stage} s (x floor)",
                     *[f"{d['stages'][stage]['wall_s']:.2f} ({d['stages'][stage]['wall_s'] / d['floor_s']:.1f})" for d in docs]])
    rows.append(["ingest+validate+derive s (x floor)",
                 *[f"{(v := sum(d['stages'][s]['wall_s'] for s in STAGES[:3])):.2f} ({v / d['floor_s']:.1f})" for d in docs]])
    rows.append(["run outside steps s", *[f"{d['orchestration_s']:.2f}" for d in docs]])
    rows.append(["total s (x floor)", *[f"{d['total_s']:.2f} ({d['total_s'] / d['floor_s']:.1f})" for d in docs]])
    rows.append(["process s (imports s)", *[f"{d['process_s']:.2f} ({d['startup_s']:.2f})" for d in docs]])
    rows.append(["CPU s: run / floor", *[f"{d['total_cpu_s']:.1f} / {d['floor_cpu_s']:.2f}" for d in docs]])
    for stage in STAGES:
        rows.append([f"peak RSS MB: {stage}", *[f"{d['stages'][stage]['peak_rss_mb']:.0f}" for d in docs]])
    rows.append(["peak RSS MB: process", *[f"{d['peak_rss_mb']:.0f}" for d in docs]])
    rows.append(["load average before / after", *[f"{d['load_average'][0]:.1f} / {d['load_average'][1]:.1f}" for d in docs]])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--table"]:  # python -m pipelines.bench --table bench/bench_*.json
        print(markdown_table([json.loads(Path(f).read_text(encoding="utf-8")) for f in argv[1:]]))
        return 0
    if argv[:1] == ["--child"]:
        p = argparse.ArgumentParser(prog="python -m pipelines.bench --child")
        for name in ("--study", "--export", "--output", "--data-cut", "--result"):
            p.add_argument(name, required=True)
        p.add_argument("--instance", choices=("sqlite", "ephemeral"), default="sqlite")
        return _child(p.parse_args(argv[1:]))
    return cli_bench(argv)


if __name__ == "__main__":
    sys.exit(main())
