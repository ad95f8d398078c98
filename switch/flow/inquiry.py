"""Inquiry: which operator serves a number and what amounts it takes (bank87 0100 with
3 = 300000, answered in 44 and 48 `OP`, `AM`). No money moves and nothing is recorded."""

from __future__ import annotations

from routing import InvalidMsisdn, Router, normalise_msisdn
from switch.flow.codes import ResponseCode
from switch.flow.messages import Answer, Request


def inquire(request: Request, router: Router) -> Answer:
    acquirer = request.payer.acquirer
    if request.problem:
        return Answer(response_code=ResponseCode.FORMAT_ERROR)
    if request.acquirer_id != acquirer.institution_id:
        return Answer(response_code=ResponseCode.NOT_PERMITTED)
    try:
        msisdn = normalise_msisdn(request.msisdn, acquirer.country)
    except InvalidMsisdn:
        return Answer(response_code=ResponseCode.INVALID_MSISDN)
    route = router.route(msisdn)
    if route is None:
        return Answer(response_code=ResponseCode.NO_ROUTE)
    if acquirer.allowed_operators and route.operator not in acquirer.allowed_operators:
        return Answer(response_code=ResponseCode.NOT_PERMITTED)
    return Answer(response_code=ResponseCode.APPROVED, operator_id=route.operator,
                  tags={"OP": route.operator, "AM": allowed_amounts(router, route.operator)})


def allowed_amounts(router: Router, operator_id: str) -> str:
    """48 AM: a list ("10000,20000") or a range with its step ("10000-500000/1000"); empty: any."""
    rule = router.amount_rule(operator_id)
    if rule is None:
        return ""
    if rule.amounts is not None:
        return ",".join(str(amount) for amount in sorted(rule.amounts))
    return f"{rule.minimum}-{rule.maximum}/{rule.step or 1}"
