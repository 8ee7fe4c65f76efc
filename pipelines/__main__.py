"""Command line: ``python -m pipelines <command>``.

  simulate   write a simulated CRF export of the study
  run        run the whole pipeline on one export through Dagster
  escalate   the 3+3 decision for an outcome path such as "1NNN 2NTN"
  nca        non-compartmental analysis of a subject,time,conc CSV
  contract   regenerate docs/crf-export.md and expectations/*.json from the CRF contract
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
    if command == "run":
        parser = argparse.ArgumentParser(prog="python -m pipelines run")
        parser.add_argument("--study", required=True, help="study configuration YAML")
        parser.add_argument("--export", required=True, help="folder with the export's CSV files")
        parser.add_argument("--out", default="output", help="output root (default: output/)")
        parser.add_argument("--data-cut", default="", help="YYYY-MM-DD, if the export has no export.json")
        args = parser.parse_args(rest)
        from pipelines.run import run_export

        return run_export(args.study, args.export, args.out, args.data_cut)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
