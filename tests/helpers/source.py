"""Parse the project's source for static tests.

CPython 3.11's parser keeps a recursion counter per thread; after a ``RecursionError`` was raised
and caught in a thread (the deep-JSON tests do that on purpose), ``ast.parse`` in that thread can
fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Each
parse therefore runs in a fresh thread, whatever ran before it.
"""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ast.parse, source, filename).result()
