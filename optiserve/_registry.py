"""One registry for every pluggable family (runtimes, pre-processors, samplers, arrivals, emit targets).

Each family declares its members in an explicit tuple, no discovery (asv's
``name`` + availability check): a name, a factory, and a check that says why the
member cannot be used here. A name that is not registered is one
``UnknownNameError`` listing the valid ones, so every family reads the same at
the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from optiserve.errors import RuntimeUnavailableError, UnknownNameError

T = TypeVar("T")


def always_available() -> str | None:
    """The check of a member that needs nothing optional."""
    return None


class Named(Protocol):
    """What asv asks of a back end object: a ``name`` and an availability check."""

    @property
    def name(self) -> str: ...

    def available(self) -> str | None: ...


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One member: ``factory`` makes it, ``check`` returns ``None`` or why it is unusable here."""

    name: str
    factory: Callable[..., T]
    check: Callable[[], str | None] = always_available
    description: str = ""


@dataclass(frozen=True)
class Registry(Generic[T]):
    """Name -> factory, in declaration order. Iterating and ``in`` see the names, so
    ``", ".join(registry)`` is the list an error message shows."""

    kind: str  # what one member is called in messages: "runtime", "sampler", ...
    entries: tuple[Entry[T], ...]
    _index: dict[str, Entry[T]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Entry[T]] = {}
        for e in self.entries:
            if not e.name or e.name != e.name.strip().lower():
                raise ValueError(f"{self.kind} name {e.name!r} must be non-empty, lower case, unpadded")
            if e.name in index:
                raise ValueError(f"{self.kind} {e.name!r} is registered twice")
            index[e.name] = e
        object.__setattr__(self, "_index", index)

    def names(self) -> tuple[str, ...]:
        return tuple(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, str(name), self.names()) from None

    def __getitem__(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``."""
        return self.entry(name).factory

    def create(self, name: str, *args: object, **kwargs: object) -> T:
        """A member made by its factory; unknown names list the valid ones."""
        return self.entry(name).factory(*args, **kwargs)

    def reason(self, name: str) -> str | None:
        """``None`` when ``name`` is usable here, else one line saying why not (a check never raises)."""
        check = self.entry(name).check
        try:
            reason = check()
        except Exception as exc:  # a broken optional library is a reason, not a crash
            reason = f"{type(exc).__name__}: {exc}"
        return " ".join(reason.split()) if reason else None

    def availability(self) -> dict[str, str | None]:
        """Each name mapped to ``None`` (usable) or the reason it is not."""
        return {n: self.reason(n) for n in self._index}

    def require(self, name: str, *args: object, **kwargs: object) -> T:
        """Like ``create``, but an unusable member is a ``RuntimeUnavailableError`` with its reason."""
        reason = self.reason(name)
        if reason is not None:
            raise RuntimeUnavailableError(f"{self.kind} {name} is unavailable here: {reason}")
        return self.create(name, *args, **kwargs)

    def check_names(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` (at least one) in the order given, every one registered."""
        out = tuple(names)
        if not out:
            raise UnknownNameError(self.kind, "", self.names())
        for n in out:
            self.entry(n)
        return out


N = TypeVar("N", bound=Named)


def registry_of(kind: str, members: Iterable[N]) -> Registry[N]:
    """A registry of ready objects found by their ``name`` (asv's way); the factory returns the object."""
    return Registry(
        kind, tuple(Entry(m.name, _constant(m), m.available, getattr(m, "description", "")) for m in members)
    )


def _constant(member: N) -> Callable[[], N]:
    return lambda: member
