"""One small registry type, used for every kind of named thing (models, datasets, kernels...).

A registry maps a name to an entry holding a builder and a one-line description. Registering the
same name twice raises, and asking for an unknown name raises an error that lists the close
matches, so a typo on the command line gets a helpful answer instead of a KeyError.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from cnnlab.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """Raised for a name that is not in a registry; the message says what is."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> builder table with descriptions.

    >>> kernels = Registry("kernel")
    >>> @kernels.register("identity", description="leaves the image unchanged")
    ... def identity():
    ...     return [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    >>> kernels.get("identity").builder()[1]
    [0, 1, 0]
    """

    def __init__(self, kind: str, *, loader: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        # Entries live in modules that import torch; loading them on first use keeps
        # `import cnnlab` and `cnnlab --help` fast.
        self._loader = loader
        self._loaded = loader is None

    def register(self, name: str, *, description: str, **metadata: Any) -> Callable[[T], T]:
        def decorator(builder: T) -> T:
            self.add(name, builder, description=description, **metadata)
            return builder

        return decorator

    def add(self, name: str, builder: T, *, description: str, **metadata: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, builder, description, dict(metadata))

    def remove(self, name: str) -> None:
        """Take an entry out again (a test's temporary registration)."""
        self._ensure_loaded()
        del self._entries[name]

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def names(self) -> list[str]:
        self._ensure_loaded()
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure_loaded()
        return iter(list(self._entries.values()))
