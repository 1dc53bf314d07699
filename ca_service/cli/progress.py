"""Progress bars for commands that handle many items (rich, on stderr, only on a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MANY = 8  # fewer items than this: no bar, the summary line says it all


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[str], None]]:
    """Yield ``step(label)``; draws a bar on stderr when ``total`` is many and stderr is a terminal."""
    if total < MANY or not sys.stderr.isatty():
        yield lambda _label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[label]}", style="dim"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total, label="")

        def step(label: str) -> None:
            bar.update(task, advance=1, label=label[-60:])

        yield step
