"""Griffe extension: Sphinx roles in docstrings become mkdocstrings cross-references.

The docstrings are written for ``help()`` and editors, with Sphinx roles such as
``:func:`hebbian_layers``` or ``:class:`~hebbopt.rules.geometry.Conv2dGeometry```. Markdown knows
no roles, so before rendering, each role becomes an autorefs link ``[`name`][full.path]``:

* the target is looked up as written from the package root, then relative to the object and each
  of its parents (a bare ``check_layer`` inside ``hebbopt.selection`` is
  ``hebbopt.selection.check_layer``);
* a ``~`` prefix shows only the last component, as in Sphinx;
* an attribute without a docstring of its own has no heading (mkdocstrings renders only documented
  objects): it is described in its parent's docstring (a dataclass field in the class's ``Args``,
  ``self.x`` in ``Attributes``), so the link goes to the nearest parent that has one;
* a target in this package that resolves nowhere is logged as a warning, which fails
  ``mkdocs build --strict``; a dotted target in another package (``torch.utils.data.DataLoader``)
  or a Python builtin (``OSError``) stays plain code, as there is no page to link to offline.

Enabled by ``extensions:`` under the Python handler in ``mkdocs.yml``.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

logger = griffe.get_logger("sphinx_roles")

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc):`(~?)([\w.]+)`")


def _lookup(scope: griffe.Object, path: str) -> griffe.Object | griffe.Alias | None:
    try:
        return scope[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def resolve(obj: griffe.Object, target: str) -> str | None:
    """The canonical path of the heading that documents ``target`` as seen from ``obj``, or ``None``."""
    root = obj.package
    found = None
    if target == root.path:
        found = root
    elif target.startswith(root.path + "."):
        found = _lookup(root, target[len(root.path) + 1 :])
    scope: griffe.Object | None = obj
    while found is None and scope is not None:
        if scope.is_module or scope.is_class:
            found = _lookup(scope, target)
        scope = scope.parent
    if found is None:
        return None
    if isinstance(found, griffe.Alias):
        try:
            found = found.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    while found.is_attribute and not found.docstring and found.parent is not None:
        found = found.parent
    return found.path


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` into ``[`target`][canonical.path]`` in every docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: self._link(obj, m), obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)

    @staticmethod
    def _link(obj: griffe.Object, match: re.Match) -> str:
        short, target = match.groups()
        path = resolve(obj, target)
        text = target.rsplit(".", 1)[-1] if short else target
        if path is None:
            # Other packages (torch.*, accelerate.*) and builtins have no pages here: plain code.
            external = "." in target and target.split(".")[0] != obj.package.name
            if not external and not hasattr(builtins, target):
                logger.warning("%s: cannot resolve Sphinx role target %r", obj.path, target)
            return f"`{text}`"
        return f"[`{text}`][{path}]"
