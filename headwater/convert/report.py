"""A ConversionPlan as a report: the DDL of both phases, what was applied (and what failed),
the notes on what changed on the way, and what needs a person."""

from __future__ import annotations

from headwater.convert.run import ConversionPlan
from headwater.reports import Report, Section, Status


def conversion_report(plan: ConversionPlan) -> Report:
    ddl = Section("DDL", ["phase", "statement"])
    for statement in plan.create_statements:
        ddl.add("info", "tables", statement)
    for statement in plan.post_load_statements:
        ddl.add("info", "post-load", statement)
    applied = Section(f"applied ({plan.phase})", ["statement", "result"])
    for a in plan.applied:
        applied.add("fail" if a.error else "pass", a.statement.split("(")[0], a.error or "ok")
    notes = Section("converted with changes", ["table", "note"])
    for t in plan.tables:
        for note in t.notes:
            notes.add("info", t.table, note)
    manual = Section("needs a person", ["object", "item", "why"])
    for m in plan.all_manual:
        manual.add("warn", m.table, m.item, m.reason)
    verdict: Status = "fail" if plan.apply_failed else ("warn" if plan.all_manual else "pass")
    summary = [
        f"source {plan.source} -> target {plan.target} ({plan.target_engine})",
        f"{len(plan.tables)} table(s): {len(plan.create_statements)} statement(s) before the "
        f"full load, {len(plan.post_load_statements)} after it; "
        f"{len(plan.all_manual)} item(s) need a person",
    ]
    if plan.phase:
        failures = sum(1 for a in plan.applied if a.error)
        summary.append(
            f"applied {plan.phase}: {len(plan.applied) - failures} ok, {failures} failed"
        )
    return Report(
        "convert",
        f"convert {plan.task}",
        verdict,
        summary,
        [ddl, applied, notes, manual],
        plan.to_json(),
    )
