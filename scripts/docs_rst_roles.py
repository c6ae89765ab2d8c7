"""Griffe extension for the documentation site: reST roles in docstrings become links.

The docstrings use Sphinx-style roles (``:class:`~clustersync.Mutex```, ``:func:`schedule```)
while mkdocstrings renders Markdown. When the package is loaded, this rewrites each role
into a cross-reference (``[`Mutex`][clustersync.Mutex]``) if its target is rendered on the
site, and into inline code otherwise, so that ``mkdocs build --strict`` never meets a link
it cannot resolve. It also shows the value of a parameter default that names a module
constant (``ttl: float = 15.0`` rather than ``= DEFAULT_TTL``). Loaded by ``mkdocs.yml``
(``extensions: [scripts/docs_rst_roles.py]``).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from griffe import AliasResolutionError, CyclicAliasError, ExprName, Extension, Function, Object

#: Modules with a page of their own in the API reference (``::: module``).
DOCUMENTED = (
    "clustersync",
    "clustersync.aio",
    "clustersync.testing",
    "clustersync.testing.checker",
    "clustersync.exceptions",
)
ROLE = re.compile(r":(?P<role>[a-z]+):`(?P<tilde>~?)(?P<target>[\w.]+)`")
CALLABLE_ROLES = {"func", "meth"}


def _home(path: str) -> str:
    """The documented module where an object defined at ``path`` appears."""
    if path.startswith("clustersync._async"):
        return "clustersync.aio"
    for module in ("clustersync.testing.checker", "clustersync.testing", "clustersync.exceptions"):
        if path == module or path.startswith(module + "."):
            return module
    return "clustersync"


class RstRoles(Extension):
    """Rewrite ``:role:`target``` in every docstring of the package."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        self._pkg = pkg
        self._rewrite(pkg)

    # -- walking ----------------------------------------------------------------------

    def _rewrite(self, obj: Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: self._replace(obj, m), obj.docstring.value)
        if isinstance(obj, Function):
            for parameter in obj.parameters:
                if isinstance(parameter.default, ExprName):
                    parameter.default = self._constant(parameter.default) or parameter.default
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, Object):
                self._rewrite(member)

    def _replace(self, obj: Object, match: re.Match[str]) -> str:
        target = match["target"]
        parens = "()" if match["role"] in CALLABLE_ROLES else ""
        label = target.rsplit(".", 1)[-1] if match["tilde"] else target
        resolved = self._resolve(obj, target)
        if resolved is None:
            return f"`{label}{parens}`"
        return f"[`{label}{parens}`][{resolved}]"

    def _constant(self, name: ExprName) -> str | None:
        """The literal value of the module constant ``name`` refers to, if it is one."""
        constant = self._get(name.canonical_path)
        value = getattr(constant, "value", None) if constant is not None else None
        if not isinstance(value, str):
            return None
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
        return value

    # -- resolution -------------------------------------------------------------------

    def _resolve(self, obj: Object, target: str) -> str | None:
        """The documented path of ``target`` as seen from ``obj``, or None."""
        if target.startswith("clustersync"):
            return target if self._documented(target) else None
        home = _home(obj.path)
        scopes = [home, *(m for m in DOCUMENTED if m != home)]
        cls = obj if obj.is_class else obj.parent if obj.parent and obj.parent.is_class else None
        candidates = [f"{scope}.{cls.name}.{target}" for scope in scopes if cls is not None]
        candidates += [f"{scope}.{target}" for scope in scopes]
        return next((path for path in candidates if self._documented(path)), None)

    def _documented(self, path: str) -> bool:
        """Whether ``path`` gets an anchor: a documented module, or a public member of
        one (in its ``__all__``), or a documented member of such a class."""
        if path in DOCUMENTED:
            return True
        root = max((m for m in DOCUMENTED if path.startswith(m + ".")), key=len, default=None)
        if root is None:
            return False
        first, *rest = path[len(root) + 1 :].split(".")
        module = self._get(root)
        if module is None or module.exports is None or first not in module.exports:
            return False
        member = self._get(f"{root}.{first}")
        for name in rest:
            if member is None or name.startswith("_") or name not in member.members:
                return False
            member = member.members[name]
        return member is not None and (member.is_class or member.docstring is not None)

    def _get(self, path: str) -> Any:
        obj: Any = self._pkg
        for name in path.split(".")[1:]:
            try:
                obj = obj.members[name]
            except (KeyError, AliasResolutionError, CyclicAliasError):
                return None
        return obj
