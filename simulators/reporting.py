"""Tables for people: what the bank simulators saw, by response code."""

from __future__ import annotations

from simulators.bank import BankReport
from switch.flow.codes import ResponseCode


def code_name(code: str) -> str:
    """"05" -> "declined": the response code's name, for people."""
    try:
        return ResponseCode(code).name.lower().replace("_", " ")
    except ValueError:
        return ""


def bank_report_table(reports: dict[str, BankReport]) -> str:
    codes = sorted({code for report in reports.values() for code in report.answers})
    header = ["acquirer", "sent"] + [f"{code} {code_name(code)}".strip() for code in codes] + \
             ["no answer", "p50 ms", "p99 ms"]
    rows = []
    total_sent, total_lost = 0, 0
    totals = {code: 0 for code in codes}
    for name, report in reports.items():
        rows.append([name, str(report.sent)] + [str(report.answers.get(code, 0)) for code in codes] +
                    [str(report.lost), f"{report.percentile(0.5):.1f}", f"{report.percentile(0.99):.1f}"])
        total_sent += report.sent
        total_lost += report.lost
        for code in codes:
            totals[code] += report.answers.get(code, 0)
    if len(reports) > 1:
        rows.append(["total", str(total_sent)] + [str(totals[code]) for code in codes] + [str(total_lost), "", ""])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def print_bank_report(reports: dict[str, BankReport]) -> None:
    print(bank_report_table(reports))
