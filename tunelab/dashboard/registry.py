"""The dashboard's page list: pages register themselves, so a new job kind adds its own
pages without editing any other.

A page is a script module with a module-level `PAGE = Page(...)` and a guarded
`if __name__ == "__main__": run(render)` (Streamlit runs page scripts as `__main__`;
importing one only reads its `PAGE`). Built-in pages live in `tunelab/dashboard/views/`
(not `pages/`: Streamlit would take a `pages/` folder beside the app for its legacy
file-name navigation) and are found by listing that package; a plug-in (e.g. a future
`rl-train` kind) ships its own modules and names them under the `tunelab.dashboard_pages`
entry-point group, e.g. `rl-curves = "tunelab_rl.dashboard.curves"`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "tunelab.dashboard_pages"


@dataclass(frozen=True)
class Page:
    """One dashboard page.

    `kinds`: the job kinds it is about; empty means every kind (shown always), otherwise
    it is listed only when the database holds a job of one of those kinds.
    `order`: position in the navigation (low first). `path` is filled in on discovery.
    """

    title: str
    url_path: str
    icon: str = ""
    kinds: tuple[str, ...] = ()
    order: int = 100
    default: bool = False
    path: Path = field(default=Path(), compare=False)

    def applies_to(self, kinds: Iterable[str]) -> bool:
        """Whether to list this page for a database holding jobs of `kinds`."""
        return not self.kinds or bool(set(self.kinds) & set(kinds))


def _page_of(module_name: str) -> Page | None:
    module = importlib.import_module(module_name)
    page = getattr(module, "PAGE", None)
    if not isinstance(page, Page) or module.__file__ is None:
        return None
    return replace(page, path=Path(module.__file__))


def discover() -> list[Page]:
    """Built-in pages and those plug-ins name under `tunelab.dashboard_pages`, in order."""
    from tunelab.dashboard import views as builtin

    names = [f"{builtin.__name__}.{m.name}" for m in pkgutil.iter_modules(builtin.__path__)]
    names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    found = [p for p in (_page_of(n) for n in names) if p is not None]
    return sorted(found, key=lambda p: (p.order, p.title))
