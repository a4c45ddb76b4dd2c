"""List function-local imports that do not say why they are local; exit 1 when there are any.

The package imports at module level. An import inside a function stays only for one of
these reasons, written as a trailing comment on its first line, ``# lazy: <reason>``:

- ``torch``: the module must not import torch (or a module that does) when it is imported
  (the CLI's ``--help``, napari start-up, the torch-free ``settings``);
- ``help``: keeps ``napari-regional-mil --help`` and each command's ``--help`` fast
  (the command's body imports the core only when it runs);
- ``startup``: keeps napari's start-up, the reader and the widgets' first display fast
  (a heavy library such as napari, scikit-image, matplotlib or a vendor reader);
- ``optional``: an optional dependency (dask.distributed, transformers, openslide, ...),
  imported when the feature that needs it is used.

An import kept local to break an import circle is not a reason: import-linter refuses circles.

Run: ``python scripts/check_local_imports.py [src/napari_regional_mil]``; prints every
offending ``file:line`` and the totals (function-local imports, with and without a reason).
"""

from __future__ import annotations

import ast
import sys
import tokenize
from collections import Counter
from pathlib import Path

REASONS = ("torch", "help", "startup", "optional")


def local_imports(path: Path) -> list[tuple[int, str]]:
    """Each function-local import of ``path``: its line and the comment on that line ('' when none)."""
    source = path.read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_def: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_def and isinstance(child, (ast.Import, ast.ImportFrom)):
                # the comment may sit on the first line or, for a parenthesised import, the last
                lines = range(child.lineno, (child.end_lineno or child.lineno) + 1)
                found.append((child.lineno, next((comments[i] for i in lines if i in comments), "")))
            visit(child, in_def or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return found


def reason_of(comment: str) -> str | None:
    """The reason of a ``# lazy: <reason>`` comment, or None."""
    text = comment.lstrip("#").strip()
    if not text.startswith("lazy:"):
        return None
    words = text.removeprefix("lazy:").split()
    word = words[0].rstrip(",;:.") if words else ""
    return word if word in REASONS else None


def main(argv: list[str] | None = None) -> int:
    """Check every ``*.py`` under the given folder (default: the package)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "src" / "napari_regional_mil"
    reasons: Counter[str] = Counter()
    missing: list[str] = []
    for path in sorted(root.rglob("*.py")):
        for line, comment in local_imports(path):
            reason = reason_of(comment)
            if reason is None:
                missing.append(f"{path}:{line}: function-local import without '# lazy: <{'|'.join(REASONS)}>'")
            else:
                reasons[reason] += 1
    for entry in missing:
        print(entry)
    total = sum(reasons.values()) + len(missing)
    by_reason = ", ".join(f"{k} {reasons[k]}" for k in REASONS)
    print(f"function-local imports: {total} ({by_reason}; without a reason {len(missing)})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
