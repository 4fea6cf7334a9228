"""The risk decision's CPU per payment, with the full shipped rule set (every rule kind).

``python -m bench.risk [--payments N]``: decides N payments whose signals vary (history,
creditor, hour, customer present or not, identity's signals), as the payment service does for
each new payment where the writers queue, and prints the CPU per decision (process time, one
thread) with the decision's audit details built for every one (what a waiting or refused
payment records). Compare with the payment service's CPU per payment in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time

from services.payment.domain.checks import CustomerHistory
from services.payment.domain.risk import IdentitySignals, PsuContext, RiskOutcome, RiskSignals, load_risk_rules
from services.payment.settings import DEFAULT_RULES_FILE


def signals(count: int, seed: int = 7) -> list[RiskSignals]:
    """``count`` varied payments."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    made = []
    for _ in range(count):
        history = CustomerHistory(
            {60: rng.randint(0, 25)},
            paid_beneficiary_before=rng.random() < 0.7,
            average_amount_minor=rng.uniform(1_000, 50_000),
            history_count=rng.randint(0, 50),
        )
        present = rng.random() < 0.8
        made.append(
            RiskSignals(
                partner_id=rng.choice(("acme", "nova", "risky")),
                amount_minor=rng.randint(100, 2_000_000),
                history=history,
                moment=start + dt.timedelta(minutes=rng.randint(0, 1_440)),
                psu=PsuContext("203.0.113.7", "device-1", "wallet/1") if present else PsuContext(),
                identity=IdentitySignals(rng.randint(0, 5), rng.uniform(0, 3_600)),
            )
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=50_000)
    args = parser.parse_args()
    rules = load_risk_rules(DEFAULT_RULES_FILE)
    batch = signals(args.payments)
    outcomes = dict.fromkeys(RiskOutcome, 0)
    for item in batch[:1_000]:  # warm up
        rules.decide(item)
    started = time.process_time()
    for item in batch:
        decision = rules.decide(item)
        decision.audit_details()
        decision.metadata()
        outcomes[decision.outcome] += 1
    cpu = time.process_time() - started
    print(f"rules version {rules.version}: {len(rules.rules)} rules, kinds {sorted({r.kind for r in rules.rules})}")
    print(f"{args.payments} decisions: {cpu * 1e6 / args.payments:.1f} us of CPU per payment")
    print("outcomes: " + ", ".join(f"{o.name} {n * 100 / args.payments:.1f}%" for o, n in outcomes.items()))


if __name__ == "__main__":
    main()
