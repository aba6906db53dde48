"""Per-event contexts that are built only when something reads them.

A source that reads many small records (Kafka) gives each event a context of where it came from. Building
those dictionaries costs as much as decoding the events, and a pipeline of processors that never look at
their ``context`` argument, feeding a sink that needs one or two fields of it, throws them all away.
:class:`LazyContexts` keeps the source's own records instead and builds a context the first time it is read;
the pipeline asks :func:`reads_context` which processors read theirs, and gives the others a placeholder.
What a processor, sink or error policy reads is exactly what an eagerly built context would have held.
"""

from __future__ import annotations

import abc
import copy
import dis
import inspect
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

Context = dict[str, Any]

#: What a processor that never reads its ``context`` parameter is called with instead of the real one.
UNREAD_CONTEXT: Context = types.MappingProxyType({})  # type: ignore[assignment]

# Code that can reach a function's arguments without naming them: a conservative answer is "it reads".
_INTROSPECTION = frozenset({"locals", "vars", "eval", "exec", "_getframe", "currentframe", "getframeinfo",
                            "stack", "trace"})


class LazyContexts(Sequence[Context], abc.ABC):
    """One context per event, each built from the source's record the first time it is read.

    A source passes one to :meth:`bspump.Source.emit` as ``contexts``, with its records (one per event) as
    ``rows``, and implements :meth:`make`. Reading ``contexts[i]`` twice gives the same dictionary, so a
    change made by one reader is seen by the next, as with a list. :meth:`column` gives one key of every
    context without building them where the subclass knows how (:meth:`row_column`); :meth:`materialize`
    builds them all (the pipeline calls it before the first processor that reads its context).
    """

    __slots__ = ("_made", "rows")

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows
        self._made: dict[int, Context] = {}

    @abc.abstractmethod
    def make(self, row: Any) -> Context:
        """The context of the event read from ``row``: called once per row, when it is first read."""

    def make_all(self, rows: Sequence[Any]) -> list[Context]:
        """The contexts of every row in ``rows``; override with a faster construction than a call per row."""
        make = self.make
        return [make(row) for row in rows]

    def row_column(self, key: str) -> list[Any] | None:
        """``key`` of every row's context without building the contexts, or ``None`` (not known this way)."""
        return None

    # -- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Context: ...

    @overload
    def __getitem__(self, index: slice) -> list[Context]: ...

    def __getitem__(self, index: int | slice) -> Context | list[Context]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.rows)))]
        if index < 0:
            index += len(self.rows)
        context = self._made.get(index)
        if context is None:
            context = self.make(self.rows[index])  # raises IndexError past the end
            self._made[index] = context
        return context

    def __iter__(self) -> Iterator[Context]:
        return iter(self.materialize())

    def materialize(self) -> list[Context]:
        """Every context, as a list (built where not built yet; those already read are kept)."""
        made = self._made
        if len(made) == len(self.rows):
            return [made[i] for i in range(len(self.rows))]
        if not made:
            contexts = self.make_all(self.rows)
        else:
            contexts = [made[i] if i in made else self.make(row) for i, row in enumerate(self.rows)]
        self._made = dict(enumerate(contexts))
        return contexts

    def column(self, key: str) -> list[Any]:
        """``context.get(key)`` of every context, in order; without building them when none was read yet and
        the subclass knows the column from its rows."""
        if not self._made:
            column = self.row_column(key)
            if column is not None:
                return column
        return [context.get(key) for context in self.materialize()]

    def select(self, indexes: Sequence[int]) -> LazyContexts:
        """The contexts at ``indexes`` (increasing, each once), still lazy: the pipeline's view after a
        processor dropped events. Contexts already read carry over."""
        selected = copy.copy(self)
        rows = self.rows
        selected.rows = [rows[i] for i in indexes]
        made = self._made
        selected._made = {new: made[old] for new, old in enumerate(indexes) if old in made} if made else {}  # noqa: SLF001
        return selected

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.rows)} events, {len(self._made)} read>"


def select_contexts(contexts: Sequence[Context], indexes: Sequence[int]) -> Sequence[Context]:
    """The contexts at ``indexes`` (increasing), lazy where ``contexts`` is."""
    if isinstance(contexts, LazyContexts):
        return contexts.select(indexes)
    return [contexts[i] for i in indexes]


def as_list(contexts: Sequence[Context]) -> list[Context]:
    """``contexts`` as a list of built contexts (a list is returned as it is)."""
    if isinstance(contexts, LazyContexts):
        return contexts.materialize()
    return contexts if isinstance(contexts, list) else list(contexts)


def reads_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(context, event)`` may read its ``context`` argument.

    ``False`` only when ``fn`` is a Python function or method whose code provably never touches that
    parameter: it does not load, delete or capture it, takes no ``*args``, and calls nothing that could see
    its frame's locals (``locals()``, ``vars()``, ``eval``, frame inspection). Anything else reads it.
    The pipeline calls this once per processor, when it is built.
    """
    bound = inspect.ismethod(fn)
    function = fn.__func__ if bound else fn  # type: ignore[attr-defined]
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return True  # a builtin, a partial, a callable object: cannot tell
    position = 1 if bound else 0
    if code.co_argcount <= position or code.co_flags & inspect.CO_VARARGS:
        return True
    name = code.co_varnames[position]
    if name in code.co_cellvars or not _INTROSPECTION.isdisjoint(code.co_names):
        return True
    for instruction in dis.get_instructions(code):
        opname = instruction.opname
        if opname == "STORE_FAST" or not ("FAST" in opname or "DEREF" in opname or "CLOSURE" in opname):
            continue  # only instructions on local variables; rebinding the name reads nothing
        argval = instruction.argval
        names = argval if isinstance(argval, tuple) else (argval,)  # LOAD_FAST_LOAD_FAST (3.13) names two
        if name in names:
            return True
    return False
