"""An Assessment as a report: the findings by area, the type mapping of every column, and
table sizes."""

from __future__ import annotations

from headwater.assess.run import Assessment
from headwater.reports import Report, Section, worst


def assessment_report(result: Assessment) -> Report:
    checks = Section("checks", ["area", "check", "status", "found", "fix"])
    for f in result.findings:
        checks.add(f.status, f.area, f.subject, f.status, f.detail, f.fix)
    mapping = Section("type mapping", ["table", "column", "source type", "target type", "note"])
    for m in result.mappings:
        mapping.add(m.status, m.table, m.column, m.source_type, m.target_type, m.note)
    sizes = Section("sizes", ["table", "bytes", "rows (estimate)"])
    for s in result.sizes:
        sizes.add("info", s.table, f"{s.bytes:,}", f"{s.rows_estimate:,}")
    counts = {k: sum(1 for f in result.findings if f.status == k) for k in ("pass", "warn", "fail")}
    summary = [
        f"source {result.source} -> target {result.target}",
        f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed",
    ]
    return Report(
        "assess",
        f"assess {result.task}",
        worst([f.status for f in result.findings]),
        summary,
        [checks, mapping, sizes],
        result.to_json(),
    )
