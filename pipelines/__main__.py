"""Command line: ``python -m pipelines <command>``.

  simulate   write a simulated CRF export of the study
  run        run the whole pipeline on one export through Dagster
  intake     archive the complete exports of the landing area and run each new one once
  freeze     lock a data cut for a DSMB meeting: its outputs become read-only
  verify     regenerate a data cut from its archived export and report any byte that differs
  audit      print a study's audit log and check that it is intact
  escalate   the 3+3 decision for an outcome path such as "1NNN 2NTN"
  nca        non-compartmental analysis of a subject,time,conc CSV
  contract   regenerate docs/crf-export.md and expectations/*.json from the CRF contract
  bench      simulate N participants, run the whole pipeline, time it per stage (docs/performance.md)
  analysis-docs  regenerate docs/analysis-data.md from the code and a demo-run database
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "simulate":
        from clinical.simulate import cli_simulate

        return cli_simulate(rest)
    if command == "escalate":
        from clinical.escalation import cli_escalate

        return cli_escalate(rest)
    if command == "nca":
        from clinical.nca import cli_nca

        return cli_nca(rest)
    if command == "contract":
        from pathlib import Path

        from clinical.contract_docs import write_artifacts

        for path in write_artifacts(Path(__file__).resolve().parent.parent):
            print(path)
        return 0
    if command == "analysis-docs":
        parser = argparse.ArgumentParser(prog="python -m pipelines analysis-docs")
        parser.add_argument("--database", required=True, help="a trial.duckdb built by the pipeline (the demo run)")
        parser.add_argument("--out", default="docs/analysis-data.md")
        args = parser.parse_args(rest)
        from pathlib import Path

        from clinical.analysis_docs import write_analysis_docs

        print(write_analysis_docs(Path(args.database), Path(args.out)))
        return 0
    if command == "intake":
        from pipelines.sensors import cli_intake

        return cli_intake(rest)
    if command == "bench":
        from pipelines.bench import cli_bench

        return cli_bench(rest)
    if command == "run":
        parser = argparse.ArgumentParser(prog="python -m pipelines run")
        parser.add_argument("--study", required=True, help="study configuration YAML")
        parser.add_argument("--export", required=True, help="folder with the export's CSV files")
        parser.add_argument("--out", default="output", help="output root (default: output/)")
        parser.add_argument("--data-cut", default="", help="YYYY-MM-DD, if the export has no export.json")
        parser.add_argument(
            "--wait", type=float, default=0.0, metavar="SECONDS",
            help="if another run of the study is writing, wait up to SECONDS for it instead of refusing at once",
        )
        args = parser.parse_args(rest)
        from pipelines.run import run_export

        return run_export(args.study, args.export, args.out, args.data_cut, wait=args.wait)
    if command in ("freeze", "verify", "audit"):
        parser = argparse.ArgumentParser(prog=f"python -m pipelines {command}")
        parser.add_argument("--study", required=True, help="study configuration YAML")
        parser.add_argument("--out", default="output", help="output root (default: output/)")
        if command != "audit":
            parser.add_argument("--data-cut", required=True, help="YYYY-MM-DD")
        if command == "freeze":
            parser.add_argument("--reason", default="", help='e.g. "DSMB meeting 2026-01-20"')
            parser.add_argument("--export", default=None, help="the export folder, if it was not archived")
        if command == "verify":
            parser.add_argument("--keep", action="store_true", help="keep the regenerated outputs")
        args = parser.parse_args(rest)
        if command == "freeze":
            from pipelines.freeze import freeze

            return freeze(args.out, args.study, args.data_cut, args.reason, args.export)
        if command == "verify":
            from pipelines.freeze import verify

            return verify(args.out, args.study, args.data_cut, keep=args.keep)
        from pathlib import Path

        from clinical.study import load_study
        from pipelines.audit import print_log

        return print_log(Path(args.out) / load_study(args.study).study.id)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
