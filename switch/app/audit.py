"""`airswitch audit`: does the journal prove that no money was lost or made up?

Checks, over the journal and (when given) what the banks received and what the
operators credited:
1. every transaction has reached a final state (approved, declined, refused,
   reversed, resolved): nothing in flight, unknown, or waiting for a reversal;
2. no reversal the switch owes an operator is still pending or failed;
3. every 00 a bank received has its journal record answered 00;
4. the operators' own ledgers of credited-and-not-reversed top-ups equal the
   journal's approved-and-not-reversed set, top-up by top-up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from switch.flow.states import FINAL_STATES
from switch.journal import Journal


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str


async def audit(journal: Journal, bank_approvals: set[tuple[str, str]] | None = None,
                operator_credits: Counter | None = None) -> list[Finding]:
    """`bank_approvals`: (acquirer id, tracking code) of each 00 the banks received.
    `operator_credits`: Counter of (operator, tracking code, msisdn, amount) credited and not reversed."""
    findings = []
    states = await journal.states()
    open_states = {state: count for state, count in states.items() if state not in FINAL_STATES}
    total = sum(states.values())
    findings.append(Finding("every transaction has a final state", not open_states,
                            f"{total} transactions: " + ", ".join(f"{s} {c}" for s, c in sorted(states.items()))))
    owed = await journal.reversals(("pending", "failed"), limit=100_000)
    findings.append(Finding("every reversal owed to an operator was applied", not owed,
                            f"{len(owed)} pending or failed" + (": " + ", ".join(
                                f"{r.txn_id} ({r.operator_id}, {r.state}, {r.attempts} tries)" for r in owed[:5])
                                if owed else "")))
    if bank_approvals is not None:
        journaled = await journal.approved_answers()
        missing = bank_approvals - journaled
        findings.append(Finding("every 00 a bank received is journaled", not missing,
                                f"{len(bank_approvals)} approvals received, {len(missing)} without a journal record"
                                + (f": {sorted(missing)[:5]}" if missing else "")))
    if operator_credits is not None:
        journal_credits = Counter((operator, rrn, msisdn, amount)
                                  for _, operator, _, _, rrn, msisdn, amount in await journal.approved_at_operators())
        only_operator = operator_credits - journal_credits
        only_journal = journal_credits - operator_credits
        findings.append(Finding(
            "operators' credits equal the journal's approved-and-not-reversed set",
            not only_operator and not only_journal,
            f"{sum(operator_credits.values())} credited at operators, {sum(journal_credits.values())} approved in the "
            f"journal; {sum(only_operator.values())} only at operators, {sum(only_journal.values())} only in the journal"
            + (f"; e.g. {list(only_operator)[:3]} {list(only_journal)[:3]}" if only_operator or only_journal else "")))
    return findings


def format_findings(findings: list[Finding]) -> str:
    return "\n".join(f"[{'ok' if f.ok else 'FAIL'}] {f.check}: {f.detail}" for f in findings)
