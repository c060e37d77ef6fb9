"""Import Gradio without rewriting its type stubs: about half of ``import gradio``, on every start.

Gradio's ``ComponentMeta`` calls ``create_or_modify_pyi`` for each component class it defines, on
every ``import gradio``: it re-reads and ast-parses the component's source file to rewrite the
``.pyi`` stub beside it (Gradio 6.31; 1.3-1.5 s of the 2.8-3.1 s import on the 2-core AMD EPYC
with VNNI, ``avx512_vnni``, this project runs on). Only editors read those stubs, and the installed ones are already
complete, so the app skips the rewrite: ``skip_stub_rewrite()`` installs a one-shot import hook
that replaces that one function with a no-op as ``gradio.component_meta`` loads, before any
component class exists. Everything else in Gradio runs unchanged; a Gradio without that function
imports as it always does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

MODULE = "gradio.component_meta"
FUNCTION = "create_or_modify_pyi"


def _no_stub_rewrite(*args, **kwargs) -> None:
    """Stands in for Gradio's stub writer: the stubs that shipped with Gradio stay as they are."""


class _SkipStubRewrite(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as the normal path finder would, and swaps the stub writer
    out right after the module's own code has run. Removes itself on first use."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            if callable(getattr(module, FUNCTION, None)):
                setattr(module, FUNCTION, _no_stub_rewrite)

        spec.loader.exec_module = exec_module
        return spec


def skip_stub_rewrite() -> bool:
    """Call before the first ``import gradio``. True if the hook is in place (or has already
    done its work); False when Gradio was imported before, with its stub writer."""
    loaded = sys.modules.get(MODULE)
    if loaded is not None:
        return getattr(loaded, FUNCTION, None) is _no_stub_rewrite
    if not any(isinstance(f, _SkipStubRewrite) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipStubRewrite())
    return True
