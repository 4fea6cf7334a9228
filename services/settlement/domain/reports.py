"""Net settlement reports: per-participant sent/received/net and the bilateral matrix.

``net = received - sent``: positive means the participant is owed money. Over all
participants of a window the nets sum to zero, because every obligation is one
participant's ``sent`` and another's ``received``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from services.settlement.domain.obligations import Obligation, ObligationState
from services.settlement.domain.windows import SettlementWindow

CSV_COLUMNS = (
    "record_type",
    "window",
    "currency_code",
    "window_state",
    "participant",
    "payer",
    "payee",
    "sent_minor_units",
    "received_minor_units",
    "net_minor_units",
    "amount_minor_units",
    "kind",
)


@dataclass(frozen=True)
class ParticipantNet:
    """A participant's gross flows and multilateral net in one window."""

    participant_id: str
    sent_minor: int
    received_minor: int

    @property
    def net_minor(self) -> int:
        """received - sent: positive = owed money."""
        return self.received_minor - self.sent_minor


@dataclass(frozen=True)
class BilateralPosition:
    """What ``payer_id`` owes ``payee_id`` in a window, before netting."""

    payer_id: str
    payee_id: str
    amount_minor: int


@dataclass(frozen=True)
class KindTotal:
    """The obligations of one kind from ``payer_id`` to ``payee_id`` in a window."""

    kind: str
    payer_id: str
    payee_id: str
    amount_minor: int
    count: int


@dataclass(frozen=True)
class SettlementReport:
    """A window's net settlement report, sorted by participant (and payer, payee)."""

    window: SettlementWindow
    net_positions: tuple[ParticipantNet, ...]
    bilateral_positions: tuple[BilateralPosition, ...]
    generated_at: dt.datetime
    kind_totals: tuple[KindTotal, ...] = ()

    @property
    def nets_sum_minor(self) -> int:
        """Sum of the nets; zero for a consistent window."""
        return sum(p.net_minor for p in self.net_positions)

    def for_participant(self, participant_id: str | None) -> SettlementReport:
        """The partner's view: only its own net and the bilateral positions it is part of."""
        return replace(
            self,
            net_positions=tuple(p for p in self.net_positions if p.participant_id == participant_id),
            bilateral_positions=tuple(
                b for b in self.bilateral_positions if participant_id in (b.payer_id, b.payee_id)
            ),
            kind_totals=tuple(k for k in self.kind_totals if participant_id in (k.payer_id, k.payee_id)),
        )


def window_nets(obligations: Iterable[Obligation]) -> dict[str, int]:
    """Each participant's net (received - sent) over committed obligations."""
    nets: dict[str, int] = defaultdict(int)
    for obligation in obligations:
        if obligation.state is ObligationState.COMMITTED:
            nets[obligation.payer_id] -= obligation.amount_minor
            nets[obligation.payee_id] += obligation.amount_minor
    return dict(nets)


def build_report(window: SettlementWindow, obligations: Iterable[Obligation], now: dt.datetime) -> SettlementReport:
    """The report of ``window`` from its committed obligations."""
    sent: dict[str, int] = defaultdict(int)
    received: dict[str, int] = defaultdict(int)
    bilateral: dict[tuple[str, str], int] = defaultdict(int)
    by_kind: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for obligation in obligations:
        if obligation.state is not ObligationState.COMMITTED or obligation.window_id != window.id:
            continue
        sent[obligation.payer_id] += obligation.amount_minor
        received[obligation.payee_id] += obligation.amount_minor
        bilateral[(obligation.payer_id, obligation.payee_id)] += obligation.amount_minor
        total = by_kind[(obligation.kind, obligation.payer_id, obligation.payee_id)]
        total[0] += obligation.amount_minor
        total[1] += 1
    participants = sorted(set(sent) | set(received))
    return SettlementReport(
        window=window,
        net_positions=tuple(ParticipantNet(p, sent.get(p, 0), received.get(p, 0)) for p in participants),
        bilateral_positions=tuple(
            BilateralPosition(payer, payee, amount) for (payer, payee), amount in sorted(bilateral.items())
        ),
        generated_at=now,
        kind_totals=tuple(
            KindTotal(kind, payer, payee, amount, count)
            for (kind, payer, payee), (amount, count) in sorted(by_kind.items())
        ),
    )


def report_csv(report: SettlementReport) -> str:
    """RFC 4180 CSV with a header row: NET rows, then BILATERAL rows; amounts in minor units."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    window = report.window
    common = (f"settlementWindows/{window.id}", window.currency, window.state.value)
    for net in report.net_positions:
        writer.writerow(
            (
                "NET",
                *common,
                f"participants/{net.participant_id}",
                "",
                "",
                net.sent_minor,
                net.received_minor,
                net.net_minor,
                "",
                "",
            )
        )
    for position in report.bilateral_positions:
        writer.writerow(
            (
                "BILATERAL",
                *common,
                "",
                f"participants/{position.payer_id}",
                f"participants/{position.payee_id}",
                "",
                "",
                "",
                position.amount_minor,
                "",
            )
        )
    for total in report.kind_totals:
        writer.writerow(
            (
                "KIND",
                *common,
                "",
                f"participants/{total.payer_id}",
                f"participants/{total.payee_id}",
                "",
                "",
                "",
                total.amount_minor,
                total.kind,
            )
        )
    return buffer.getvalue()
