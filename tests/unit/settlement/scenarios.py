"""Random settlement scenarios and a pure in-memory model of the rules.

The same operation lists drive the pure model (unit tests) and the real service layer on
SQLite and PostgreSQL (integration tests); both must give the same outcomes and keep the
same invariants.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from meshlib.errors import AlreadyExists, InvalidArgument, MeshError, NotFound
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import NetDebitCap
from services.settlement.domain.reports import window_nets
from services.settlement.domain.windows import SettlementWindow, WindowState, open_window

CURRENCY = "EUR"
CAPS = (500, 800, 300)  # participant index -> net debit cap
PAYMENTS = 12
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
OK = "OK"


@dataclass(frozen=True)
class Reserve:
    """Reserve ``amount`` from payer to payee for a payment."""

    payment: int
    payer: int
    payee: int
    amount: int


@dataclass(frozen=True)
class Commit:
    """Commit a payment's obligation."""

    payment: int


@dataclass(frozen=True)
class Release:
    """Release a payment's obligation."""

    payment: int


@dataclass(frozen=True)
class Close:
    """Close the open window."""


@dataclass(frozen=True)
class Settle:
    """Settle the ``pick``-th window (creation order, modulo the count), whatever its state."""

    pick: int


@dataclass(frozen=True)
class ReserveBatch:
    """Reservations sent as one BatchReserveObligations (different payments)."""

    items: tuple[Reserve, ...]


@dataclass(frozen=True)
class CommitBatch:
    """Commits sent as one BatchCommitObligations (different payments)."""

    items: tuple[Commit, ...]


Operation = Reserve | Commit | Release | Close | Settle
BatchStep = ReserveBatch | CommitBatch | Release | Close

reserves = st.builds(
    Reserve,
    st.integers(0, PAYMENTS - 1),
    st.integers(0, len(CAPS) - 1),
    st.integers(0, len(CAPS) - 1),
    st.integers(1, 600),
)
commits = st.builds(Commit, st.integers(0, PAYMENTS - 1))

operations = st.lists(
    st.one_of(
        reserves,
        commits,
        st.builds(Release, st.integers(0, PAYMENTS - 1)),
        st.just(Close()),
        st.builds(Settle, st.integers(0, 20)),
    ),
    min_size=1,
    max_size=40,
)

# Batches mixed with single releases and closes; a batch never names one payment twice (that
# fails the whole call, see the gRPC tests).
batch_steps = st.lists(
    st.one_of(
        st.builds(ReserveBatch, st.lists(reserves, min_size=1, max_size=8, unique_by=lambda r: r.payment).map(tuple)),
        st.builds(CommitBatch, st.lists(commits, min_size=1, max_size=8, unique_by=lambda c: c.payment).map(tuple)),
        st.builds(Release, st.integers(0, PAYMENTS - 1)),
        st.just(Close()),
    ),
    min_size=1,
    max_size=12,
)


def payment_id(index: int) -> str:
    """The payment id of a scenario payment."""
    return f"pay-{index}"


def outcome(error: MeshError | None) -> str:
    """OK, or the failure's reason."""
    return OK if error is None else error.reason


class PureBook:
    """The settlement rules on plain domain objects, in memory (the reference model)."""

    def __init__(self) -> None:
        self.positions = {i: Position(str(i), CURRENCY) for i in range(len(CAPS))}
        self.obligations: dict[str, Obligation] = {}
        self.windows: list[SettlementWindow] = []
        self.settled_any = False

    def _open(self) -> SettlementWindow:
        if not self.windows or self.windows[-1].state is not WindowState.OPEN:
            self.windows.append(open_window(f"w{len(self.windows)}", CURRENCY, NOW))
        return self.windows[-1]

    def apply(self, op: Operation) -> str:
        """Run one operation; returns its outcome."""
        try:
            self._perform(op)
        except MeshError as error:
            return outcome(error)
        return OK

    def _perform(self, op: Operation) -> None:
        if isinstance(op, Reserve):
            if op.payer == op.payee:
                raise InvalidArgument.field("payee", "must differ from payer")
            pid = payment_id(op.payment)
            existing = self.obligations.get(pid)
            if existing is not None:
                if existing.same_fields(str(op.payer), str(op.payee), CURRENCY, op.amount):
                    return
                raise AlreadyExists("different", reason="OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS")
            cap = NetDebitCap(CURRENCY, CAPS[op.payer])
            self.positions[op.payer] = self.positions[op.payer].reserve(op.amount, cap, NOW)
            self.obligations[pid] = Obligation(
                pid, str(op.payer), str(op.payee), CURRENCY, op.amount, ObligationState.RESERVED, NOW, NOW
            )
        elif isinstance(op, Commit):
            obligation = self._get(op.payment)
            if obligation.state is ObligationState.COMMITTED:
                return
            if obligation.state is ObligationState.RELEASED:
                obligation.commit("", NOW)  # raises before any window opens, as the service does
            committed = obligation.commit(self._open().id, NOW)
            payer, payee = int(obligation.payer_id), int(obligation.payee_id)
            self.positions[payer] = self.positions[payer].commit_outflow(obligation.amount_minor, NOW)
            self.positions[payee] = self.positions[payee].commit_inflow(obligation.amount_minor, NOW)
            self.obligations[obligation.id] = committed
        elif isinstance(op, Release):
            obligation = self._get(op.payment)
            released = obligation.release(NOW)
            if released is not obligation:
                payer = int(obligation.payer_id)
                self.positions[payer] = self.positions[payer].release(obligation.amount_minor, NOW)
                self.obligations[obligation.id] = released
        elif isinstance(op, Close):
            window = self._open()
            self.windows[-1] = window.close(NOW)
            self._open()
        elif isinstance(op, Settle):
            if not self.windows:
                self._open()
            index = op.pick % len(self.windows)
            window = self.windows[index]
            settled = window.settle(NOW)
            for participant, net in window_nets(self.in_window(window.id)).items():
                self.positions[int(participant)] = self.positions[int(participant)].settle(net, NOW)
            self.windows[index] = settled
            self.settled_any = True

    def _get(self, payment: int) -> Obligation:
        obligation = self.obligations.get(payment_id(payment))
        if obligation is None:
            raise NotFound("obligation not found")
        return obligation

    def in_window(self, window_id: str) -> list[Obligation]:
        """The obligations committed in a window."""
        return [o for o in self.obligations.values() if o.window_id == window_id]


def check_invariants(
    positions: dict[str, Position],
    caps: dict[str, int],
    obligations: list[Obligation],
    windows: list[SettlementWindow],
    settled_any: bool,
) -> None:
    """The rules every reachable state keeps (positions keyed by participant id)."""
    window_by_id = {w.id: w for w in windows}
    assert sum(1 for w in windows if w.state is WindowState.OPEN) <= 1
    if windows:
        assert windows[-1].state is WindowState.OPEN, "closing a window opens the next"
    unsettled_net: dict[str, int] = defaultdict(int)
    reserved: dict[str, int] = defaultdict(int)
    for obligation in obligations:
        if obligation.state is ObligationState.COMMITTED:
            # Exactly one window, an existing one.
            assert obligation.window_id in window_by_id
            if window_by_id[obligation.window_id].state is not WindowState.SETTLED:
                unsettled_net[obligation.payer_id] -= obligation.amount_minor
                unsettled_net[obligation.payee_id] += obligation.amount_minor
        else:
            assert obligation.window_id is None
            if obligation.state is ObligationState.RESERVED:
                reserved[obligation.payer_id] += obligation.amount_minor
    for window in windows:
        nets = window_nets(o for o in obligations if o.window_id == window.id)
        assert sum(nets.values()) == 0, "a window's nets sum to zero"
        count = sum(1 for o in obligations if o.window_id == window.id)
        assert window.obligation_count == count
    for participant, position in positions.items():
        # Settled windows leave the position exactly once: never doubled, never kept.
        assert position.net_minor == unsettled_net.get(participant, 0)
        assert position.reserved_minor == reserved.get(participant, 0)
        if not settled_any:
            assert position.exposure_minor <= caps[participant], "a reservation never goes above the cap"
    assert sum(p.net_minor for p in positions.values()) == 0


def pure_window_totals(book: PureBook) -> list[SettlementWindow]:
    """The model's windows with their totals filled in."""
    return [
        replace(
            w,
            obligation_count=len(book.in_window(w.id)),
            gross_minor=sum(o.amount_minor for o in book.in_window(w.id)),
        )
        for w in book.windows
    ]
