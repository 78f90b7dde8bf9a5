"""What a chaos run tells at the end: the audit as tables, for a human.

The machine-readable report is the JSON line the command prints last; this is the
part a person reads, with the timelines of the jobs worth looking at.
"""

from __future__ import annotations

from rich.table import Table

from cli.chaos.audit import Audit
from cli.chaos.config import console


def print_summary(result: Audit, events: list[str]) -> None:
    r = result.report
    table = Table(title="editq chaos")
    table.add_column("what")
    table.add_column("value", justify="right")
    failed_total = sum(r["failed"].values())
    rows: list[tuple[str, str]] = [
        ("submitted", str(r["submitted"])), ("succeeded", str(r["succeeded"])),
        ("failed", str(failed_total)),
        *[(f"  {code}", str(n)) for code, n in r["failed"].items()],
        ("canceled", str(r["canceled"])), ("lost (not terminal)", str(r["lost"])),
        ("duplicate outputs", str(r["duplicate_outputs"])),
        ("duplicate charges", str(r["duplicate_charges"])),
        ("provider billed (USD)", r["provider_billed"]),
        ("recorded spend (ledger)", r["recorded_spend"]),
        ("sum of cost.actual", r["sum_of_actual"]),
        ("billed - recorded", r["billed_minus_recorded"]),
        ("ambiguous jobs / their estimates", f"{r['ambiguous_submissions']} / "
                                             f"{r['ambiguous_estimate']}"),
        ("worker kills / restarts", f"{r['worker_kills']} / {r['worker_restarts']}"),
        ("redis restarts", str(r["redis_restarts"])),
        ("submit errors / retries", f"{sum(r['submit_errors'].values())} / "
                                    f"{r['submit_retries']}"),
        ("seconds: submit / drain / total", f"{r['durations']['submit']} / "
                                            f"{r['durations']['drain']} / "
                                            f"{r['durations']['total']}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    providers = Table(title="by provider")
    for column in ("provider", "jobs", "billed", "recorded", "ambiguous", "estimate", "ok"):
        providers.add_column(column)
    for name, p in r["by_provider"].items():
        providers.add_row(name, str(p["jobs"]), p["billed"], p["recorded"], str(p["ambiguous"]),
                          p["ambiguous_estimate"], "yes" if p["gap_within_ambiguous"] else "NO")
    console.print(providers)
    if events:
        console.print("what was broken: " + "; ".join(events))
    for job_id, lines in result.timelines.items():
        label = "the slowest job, " if job_id == r["examples"]["slowest"] else ""
        console.print(f"timeline of {label}{job_id}:", highlight=False)
        for line in lines:
            console.print(f"    {line}", highlight=False, markup=False)
    console.print("[green]ok[/]" if r["ok"] else "[red]NOT ok[/]")
