"""Loss windows, the listener's last sign of life, and how far the CDR catch-up has read: what lets
a restarted daemon know what it missed and resume recovering it where it stopped."""
from __future__ import annotations

from datetime import datetime

from ..core.loss import LossWindow
from .connection import _reconnects


def _window(row) -> LossWindow:
    return LossWindow(id=row.id, node=row.node, opened_at=row.opened_at, closed_at=row.closed_at,
                      why=row.why, detail=row.detail, recovered=row.recovered, learned=row.learned)


class GapTables:
    """The Store's methods on loss windows, the listener's mark and the CDR cursors."""

    @_reconnects
    def loss_windows(self, node: str | None = None, since: datetime | None = None) -> list[LossWindow]:
        """Windows, oldest first; of one node, and/or still open or closed after `since`."""
        w = self.m.LossWindow
        query = w.select().order_by(w.opened_at, w.id)
        if node is not None:
            query = query.where(w.node == node)
        if since is not None:
            query = query.where(w.closed_at.is_null() | (w.closed_at >= since))
        return [_window(row) for row in query]

    @_reconnects
    def open_loss_window(self, node: str) -> LossWindow | None:
        w = self.m.LossWindow
        row = (w.select().where(w.node == node, w.closed_at.is_null()).order_by(w.opened_at.desc(), w.id.desc())
               .first())
        return _window(row) if row is not None else None

    def start_loss_window(self, node: str, opened_at: datetime, why: str, detail: str = "") -> LossWindow:
        """Open a window for the node, unless one is open already (the daemon died while it was
        not subscribed): then that one goes on, from its own start."""
        with self.transaction():
            current = self.open_loss_window(node)
            if current is not None:
                return current
            row = self.m.LossWindow.create(node=node, opened_at=opened_at, why=why, detail=detail[:200])
            return _window(row)

    def close_loss_window(self, node: str, closed_at: datetime) -> LossWindow | None:
        """Close the node's open window (the listener is subscribed again); the window, or None."""
        w = self.m.LossWindow
        with self.transaction():
            current = self.open_loss_window(node)
            if current is None:
                return None
            w.update(closed_at=max(closed_at, current.opened_at)).where(w.id == current.id).execute()
            return _window(w.get_by_id(current.id))

    @_reconnects
    def set_loss_window_why(self, window_id: int, why: str) -> None:
        w = self.m.LossWindow
        w.update(why=why).where(w.id == window_id).execute()

    def count_recovered(self, window_id: int, recovered: int, learned: int) -> None:
        """Inside the catch-up's transaction: add to the window's counts."""
        w = self.m.LossWindow
        w.update(recovered=w.recovered + recovered, learned=w.learned + learned).where(w.id == window_id).execute()

    @_reconnects
    def listener_mark(self, node: str) -> tuple[datetime, str] | None:
        row = self.m.ListenerMark.get_or_none(self.m.ListenerMark.node == node)
        return (row.at, row.core_uuid) if row is not None else None

    @_reconnects
    def set_listener_mark(self, node: str, at: datetime, core_uuid: str) -> None:
        k = self.m.ListenerMark
        (k.insert(node=node, at=at, core_uuid=core_uuid)
         .on_conflict(conflict_target=[k.node], preserve=[k.at, k.core_uuid]).execute())

    @_reconnects
    def cdr_cursors(self, node: str) -> dict[str, tuple[str, int]]:
        """file key -> (path when last read, offset)."""
        c = self.m.CdrCursor
        return {key: (path, offset) for key, path, offset
                in c.select(c.file_key, c.path, c.offset).where(c.node == node).tuples()}

    def set_cdr_cursor(self, node: str, file_key: str, path: str, offset: int) -> None:
        c = self.m.CdrCursor
        (c.insert(node=node, file_key=file_key, path=path, offset=offset)
         .on_conflict(conflict_target=[c.node, c.file_key], preserve=[c.path, c.offset]).execute())

    def forget_cdr_cursors(self, node: str, keys) -> None:
        """Cursors of files that are gone (rotated away and deleted)."""
        c = self.m.CdrCursor
        keys = list(keys)
        if keys:
            c.delete().where(c.node == node, c.file_key.in_(keys)).execute()
