"""The one path every binding change takes: read through the store, decide in the core
(core/binding_changes.py), write through the store's one write (Store.apply_binding_changes):
the binding row, its binding_history row and its `binding.changed` event in one transaction.

Set, remove and import by hand, learning from calls, hand-over, release when an agent goes,
blocks, max_sticky_misses, client links and expiry all come through here. (The one other write
is `client unlink` of a client's own id: Store.unlink_number re-keys the client's bindings to
another of its numbers, agents unchanged, and reports nothing.) A write that finds the binding
changed by another process meanwhile (BindingRaced) is read and decided again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from .core import binding_changes as changes_of
from .core.binding_changes import BindingChange, Refused
from .core.missed import CALLBACK, closed_by, closes_missed
from .core.model import AUTO, MANUAL, SOURCES, Agent, Binding, Call, Group
from .core.settings import Settings
from .core.webhooks import Event, binding_changed, callback_done
from .store import BindingRaced, Store, StoreError
from .store.calls import with_uuid
from .store.clients import require_client

# How often a change is read and decided again when another process changed the binding meanwhile.
ATTEMPTS = 20


class BindingPath:
    def __init__(self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 configuration: Callable[[], tuple[Settings, Mapping[str, Agent]]] | None = None):
        self.store = store
        self.clock = clock
        # The settings and agents the events' bound_agent is decided under (the service passes
        # its cached ones); by default read from the store.
        self.configuration = configuration or (lambda: (store.settings(), store.agents()))

    # -- the one write -----------------------------------------------------------------------------
    def _events(self, changes: Iterable[BindingChange]) -> list[Event]:
        """The binding.changed events of the reported changes, each with who is responsible for
        the client after it (none without webhooks: an import of a million need not build them
        for nobody). Read before the changes are written, in their transaction."""
        reported = [c for c in changes if c.reported]
        if not reported or not self.store.webhook_urls:
            return []
        holders = self._holders_after(reported)
        return [binding_changed(c, holders[c.client]) for c in reported]

    def _holders_after(self, changes: list[BindingChange]) -> dict[str, str | None]:
        clients = {c.client for c in changes}
        settings, agents = self.configuration()
        return changes_of.holders_after(self.store.bindings_of(clients), changes, agents, settings, self.clock(),
                                        self.store.clients_of(clients))

    def _apply(self, decide: Callable[[], list[BindingChange]], what: str,
               events_around: Callable[[list[BindingChange]], list[Event]] | None = None) -> list[BindingChange]:
        """Read and decide (`decide`), then write the changes with their history and events, in one
        transaction; again, when another process changed a binding meanwhile. `events_around`:
        the events to write instead of the changes' own (a call's events around its learning)."""
        for _ in range(ATTEMPTS):
            try:
                with self.store.transaction():  # nested in a caller's: a savepoint
                    try:
                        changes = decide()
                    except Refused as exc:
                        raise StoreError(str(exc)) from None
                    events = events_around(changes) if events_around else self._events(changes)
                    self.store.apply_binding_changes(changes, events)
                    return changes
            except BindingRaced:
                continue
        raise StoreError(f"could not record {what}: it kept changing under us")

    # -- by hand -----------------------------------------------------------------------------------
    def set_manual_binding(self, client: str, agent: str, now: datetime, expires_at: datetime | None = None,
                           why: str = "set by hand") -> Binding:
        """Bind the client (a linked number binds its client) to `agent` by hand."""
        require_client(client)
        why = " ".join(str(why).split())

        def decide():
            owner, shared, blocked = self.store.client_of(client)
            self.store.require_agent(agent)
            current = self.store.bindings_for(owner).get(MANUAL)
            return [changes_of.set_by_hand(current, owner, agent, now, blocked, expires_at, why,
                                           number=client, shared=shared)]

        (change,) = self._apply(decide, f"the binding of {client}")
        return change.new

    def remove_bindings(self, client: str, sources=SOURCES) -> int:
        def decide():
            owner = self.store.client_of(client)[0]
            return changes_of.removed(self.store.bindings_for(owner), sources, self.clock())

        return len(self._apply(decide, f"the removal of {client}'s bindings"))

    def import_bindings(self, rows, now: datetime, why: str = "imported") -> int:
        """Manual bindings from (client, agent) pairs, all or none; a later pair for a client wins."""
        pairs = dict(rows)
        for client in pairs:
            require_client(client)
        missing = sorted(set(pairs.values()) - set(self.store.agents()))
        if missing:
            raise StoreError(f"unknown agent {missing[0]!r}")

        def decide():
            # A linked number binds its client (one read of all links, not one per row).
            owners = {number: client for number, (client, _, _) in self.store.clients_of(pairs).items()}
            by_owner = {owners.get(client, client): agent for client, agent in pairs.items()}
            current = {client: found[MANUAL] for client, found in self.store.bindings_of(by_owner).items()
                       if MANUAL in found}
            return changes_of.imported(current, by_owner, now, why)

        return len(self._apply(decide, "the import"))

    # -- agents who go, clients kept away ----------------------------------------------------------
    def release_learned(self, ext: str) -> int:
        """Drop every learned binding to `ext` (the agent left or was disabled): their clients'
        next calls ring the group and teach a new binding. Manual ones stay for a human."""
        def decide():
            return changes_of.released(self.store.bindings_of_agent(ext), ext, self.clock())

        return len(self._apply(decide, f"the release of {ext}'s bindings"))

    def handover(self, ext: str, other: str) -> tuple[int, int]:
        """Every binding of `ext` moves to `other` in one transaction: (moved, left behind). A
        client kept away from `other` is not moved: its learned binding is released, its manual
        one stays on `ext` (binding list --stale)."""
        left: list[int] = []

        def decide():
            if ext != other:
                self.store.require_agent(other)
            held = self.store.bindings_of_agent(ext)
            blocked = {number: kept_away for number, (_, _, kept_away)
                       in self.store.clients_of({b.client for b in held}).items()}
            changes = changes_of.handed_over(held, ext, other, blocked, self.clock())
            left[:] = [len(held) - len(changes)]
            return changes

        changes = self._apply(decide, f"the hand-over of {ext}'s bindings")
        return sum(c.kind == changes_of.HANDOVER for c in changes), left[0]

    def block(self, number: str, ext: str) -> tuple[str, int]:
        """Keep the client of `number` away from agent `ext`: (client id, learned bindings dropped)."""
        owner: list[str] = []

        def decide():
            owner[:] = [self.store.block(number, ext)]
            return changes_of.blocked_from(self.store.bindings_for(owner[0]), ext, self.clock())

        dropped = self._apply(decide, f"the block of {number}")
        return owner[0], len(dropped)

    # -- clients as people -------------------------------------------------------------------------
    def link_numbers(self, number: str, other: str) -> str:
        """`other` (and every number of its client) joins `number`'s client; their bindings merge
        (the client's own manual binding wins; of two learned ones the later call). The client id."""
        target: list[str] = []

        def decide():
            owner, absorbed = self.store.link_numbers(number, other)
            target[:] = [owner]
            if absorbed is None:
                return []
            return changes_of.merged(owner, self.store.bindings_for(owner), absorbed,
                                     self.store.bindings_for(absorbed), self.clock())

        self._apply(decide, f"the link of {number} and {other}")
        return target[0]

    # -- learning ----------------------------------------------------------------------------------
    def _teaching(self, call: Call) -> Call | None:
        if not call.client:
            return None
        client, shared, blocked = self.store.client_of(call.client)
        return changes_of.teaching(call, client, shared, blocked)

    def learn(self, call: Call, settings: Settings) -> Binding | None:
        """Learn from one call (binding history, no events: see record_call); the new learned
        binding, or None if nothing changed. Whatever the interleaving with other processes, the
        call that ended later wins."""
        taught = self._teaching(with_uuid(call)) if call.client else None
        if taught is None:
            return None
        return self._learn(taught, settings, events_around=lambda changes: [])

    def _learn(self, taught: Call, settings: Settings, events_around) -> Binding | None:
        def decide():
            change = changes_of.learned(taught, settings, self.store.bindings_for(taught.client).get(AUTO))
            return [change] if change is not None else []

        changes = self._apply(decide, f"the binding of {taught.client}", events_around)
        return changes[0].new if changes else None

    def record_call(self, call: Call, settings: Settings, notify: bool = True) -> Binding | None:
        """Save the call record and learn from it, in one transaction (live calls and imports alike).

        With webhooks on (and `notify`), a change of the learned binding and the callbacks the call
        made go into the outbox in that same transaction. The call's own events (call.answered ...)
        are not written here: the listener's live story tells them as they happen (LiveEvents).
        """
        with self.store.transaction():
            call = self.store.save_call(call)
            client, shared, blocked = self.store.client_of(call.client) if call.client else (None, False, frozenset())
            taught = changes_of.teaching(call, client, shared, blocked) if call.client else None
            if not (notify and self.store.webhook_urls):
                return self._learn(taught, settings, lambda changes: []) if taught else None
            callbacks = []
            if closes_missed(call) == CALLBACK:
                history, clients = self.store.client_calls_before(call)
                callbacks = [callback_done(row) for row in closed_by(call, history, clients)
                             if row.closed_by == CALLBACK]
            if taught is None:
                self.store.add_events(callbacks)
                return None
            return self._learn(taught, settings, lambda changes: self._events(changes) + callbacks)

    def record_calls(self, calls, settings: Settings) -> int:
        """Save many calls and learn from them, all in one transaction (an import of call history):
        the records, bindings and binding history are those of record_call(call, settings,
        notify=False) on each call in turn; the number of calls that changed a learned binding.

        In a few statements per thousand calls instead of several per call: the calls are upserted
        in multi-row statements; the learned bindings of their clients are read once (locked on
        PostgreSQL), the learning is folded over the calls in their order in memory, and the
        changed bindings and the history are written once. Should another process have learned a
        first binding for one of the clients meanwhile (PostgreSQL), the learning is redone call
        by call. History, not news: no webhook events. `calls` (any iterable) is read to its end
        before anything is written.
        """
        calls = list(calls)
        with self.store.transaction():
            calls = self.store.save_calls(calls)
            try:
                with self.store.transaction():  # a savepoint: a lost race undoes only the learning
                    return self._learn_all(calls, settings)
            except BindingRaced:
                return sum(self.learn(call, settings) is not None for call in calls)

    def _learn_all(self, calls: list[Call], settings: Settings) -> int:
        """learn() over `calls` in turn, with one read and one write of the learned bindings."""
        owners = self.store.clients_of({call.client for call in calls if call.client})
        taught = []
        for call in calls:
            if call.client:
                client, shared, blocked = owners.get(call.client, (call.client, False, frozenset()))
                teaching = changes_of.teaching(call, client, shared, blocked)
                if teaching is not None:
                    taught.append(teaching)
        before = self.store.learned_bindings({call.client for call in taught})
        current: dict[str, Binding] = dict(before)
        history = []
        learned = 0
        for call in taught:
            change = changes_of.learned(call, settings, current.get(call.client))
            if change is None:
                continue
            learned += 1
            if change.reported:
                history.append(change)
            current[call.client] = change.new
        self.store.write_learned(before, current, history)
        return learned

    def forget_after_misses(self, call: Call, misses: int) -> Binding | None:
        """max_sticky_misses: the learned binding the call's misses lost (changes_of.after_misses),
        or None."""
        if not call.client or not changes_of.is_sticky_miss(call, misses):
            return None
        gone: list[Binding] = []

        def decide():
            client = self.store.client_of(call.client)[0]
            recent = self.store.calls_before(call, limit=misses, inbound_only=True)
            change = changes_of.after_misses(call, self.store.bindings_for(client).get(AUTO), recent, misses,
                                             self.clock())
            gone[:] = [change.old] if change else []
            return [change] if change else []

        self._apply(decide, f"the binding of {call.client}")
        return gone[0] if gone else None

    # -- expiry ------------------------------------------------------------------------------------
    def report_expired(self, settings: Settings, groups: Mapping[str, Group] | Iterable[Group],
                       now: datetime | None = None, page: int = 1000, pause: Callable[[], None] = lambda: None) -> int:
        """Report each binding that no longer routes by time (a manual one past its expiry, a
        learned one past every group's look-back window) once: a history row and a
        binding.changed, whichever daemon sees it first. The bindings stay (binding list --stale).
        Page by page through the bindings in key order, `pause()` between pages. How many were
        reported now."""
        now = now or self.clock()
        groups = groups.values() if isinstance(groups, Mapping) else groups
        by = changes_of.sweep_settings(settings, groups)
        learned_before = now - by.lookback if by.lookback.total_seconds() > 0 else None
        after, reported = None, 0
        while True:
            candidates, after = self.store.expiry_page(after, now, learned_before, page)
            expired = changes_of.expired(candidates, by, now)
            if expired:
                holders = self._holders_after(expired)
                reported += self.store.report_expiries([(c, binding_changed(c, holders[c.client])) for c in expired])
            if after is None:
                return reported
            pause()
