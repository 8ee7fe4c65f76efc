"""Data queries for data managers: every failing record of a rule, and every quarantined row.

Each query has a stable id derived from what is wrong (rule, participant, detail), not from where
it sits in the file, so the same problem in the next export keeps its id.
"""

from __future__ import annotations

import duckdb

from clinical.rules import RULES, rule_parameters
from clinical.study import StudyConfig

# Stable id: the first 10 hex digits of SHA-256 over the parts that say what is wrong.
QUERY_ID_MACRO = """
CREATE OR REPLACE MACRO query_id(parts) AS 'Q-' || upper(left(sha256(array_to_string(parts, chr(31))), 10));
"""


def build_queries(con: duckdb.DuckDBPyConnection, cfg: StudyConfig, export_id: str) -> int:
    con.execute(QUERY_ID_MACRO)
    con.execute(
        """CREATE OR REPLACE TABLE analysis.data_queries (
             QUERY_ID VARCHAR, RULE_ID VARCHAR, SEVERITY VARCHAR, FORM VARCHAR, SUBJID VARCHAR,
             DETAIL VARCHAR, STATUS VARCHAR, EXPORT_ID VARCHAR)"""
    )
    params = rule_parameters(cfg)
    for rule in RULES:
        used = {k: v for k, v in params.items() if f"${k}" in rule.sql}
        con.execute(
            f"""INSERT INTO analysis.data_queries
                SELECT query_id([$rule_id, SUBJID, DETAIL]), $rule_id, $severity, $form, SUBJID, DETAIL,
                       'Open', $export_id
                FROM ({rule.sql})""",
            used | {"rule_id": rule.id, "severity": rule.severity, "form": rule.form, "export_id": export_id},
        )
    con.execute(
        """INSERT INTO analysis.data_queries
           SELECT query_id(['INGEST-' || rule, form, subjid, "column", coalesce(value, '')]), 'INGEST-' || rule,
                  'WARN', form, subjid,
                  file || ' line ' || line || ', column ' || "column" || ': ' || message
                    || ' (value: ' || coalesce('"' || value || '"', 'blank') || ')',
                  'Open', export_id
           FROM raw.quarantine WHERE export_id = ?""",
        [export_id],
    )
    con.execute("CREATE OR REPLACE TABLE analysis.data_queries AS FROM analysis.data_queries ORDER BY FORM, SUBJID, RULE_ID, DETAIL")
    return con.execute("SELECT count(*) FROM analysis.data_queries").fetchone()[0]
