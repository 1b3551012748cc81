"""State machines: one per entity, each in its app's ``states`` module.

A ``StateMachine`` holds the entity's transition table (which state may go to which) and moves rows with a
compare-and-set: ``UPDATE ... SET status = target WHERE status IN sources`` (plus whatever other conditions the
caller's queryset adds). A transition the table does not allow is refused before any row is touched. The app's
``states`` module wraps each transition in a function that also records (timestamps, errors, events) and notifies;
every other module calls those functions (tests/test_state_machines.py checks that no other module writes a status).
``on_change`` is called after a row changed state (not after a move to the state it was in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


class IllegalTransition(Exception):
    """A transition the entity's table does not allow; nothing was written."""

    def __init__(self, entity: str, source: str, target: str):
        super().__init__(f"{entity}: {source} → {target} is not an allowed transition")
        self.entity, self.source, self.target = entity, source, target


class StateMachine:
    """The transition table of one model's state field, and the conditional update that applies it."""

    def __init__(
        self,
        model,
        table: Mapping[str, Iterable[str]],
        field: str = "status",
        on_change: Callable[[], None] | None = None,
    ):
        self.model, self.field, self.on_change = model, field, on_change
        self.table = {str(source): frozenset(str(t) for t in targets) for source, targets in table.items()}

    @property
    def entity(self) -> str:
        return self.model.__name__

    def allows(self, source: str, target: str) -> bool:
        return str(target) in self.table.get(str(source), frozenset())

    def check(self, sources: Iterable[str], target: str) -> list[str]:
        sources = [str(s) for s in sources]
        for source in sources:
            if not self.allows(source, target):
                raise IllegalTransition(self.entity, source, str(target))
        return sources

    def move(self, rows, sources: Iterable[str], target: str, **fields) -> int:
        """Move the rows (a queryset, an instance or a primary key) that are in one of ``sources`` to ``target``,
        writing ``fields`` with it; returns how many moved (0: another writer got there first)."""
        sources = self.check(sources, target)
        if isinstance(rows, self.model):
            rows = self.model.objects.filter(pk=rows.pk)
        elif not hasattr(rows, "update"):
            rows = self.model.objects.filter(pk=rows)
        moved = rows.filter(**{f"{self.field}__in": sources}).update(**{self.field: target}, **fields)
        if moved and self.on_change is not None and set(sources) != {str(target)}:
            self.on_change()
        return moved

    def set(self, obj, target: str, *, fields: Iterable[str] = (), **values) -> None:
        """For a row already locked (select_for_update): check its current state, assign and save (staying in the
        same state is always allowed: the other values change)."""
        changed = str(getattr(obj, self.field)) != str(target)
        if changed:
            self.check([getattr(obj, self.field)], target)
        setattr(obj, self.field, target)
        for name, value in values.items():
            setattr(obj, name, value)
        obj.save(update_fields=[self.field, *values, *fields])
        if changed and self.on_change is not None:
            self.on_change()
