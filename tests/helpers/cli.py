"""Run the ``sports-classifier`` command line in this process, as tests do."""

from __future__ import annotations

import contextlib
import io


def run_cli(*argv) -> tuple[int, str, str]:
    """``sports_classifier.cli.main(argv)`` (arguments made strings): (exit code, stdout, stderr)."""
    from sports_classifier import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()
