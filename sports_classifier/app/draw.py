"""Draw the Compare tab's charts in a child process: ``python -m sports_classifier.app.draw``
reads a JSON list of chart specs (``compare.chart_spec``) on stdin and writes the missing files.

The app starts it at low priority right after its models load, so that matplotlib's few
seconds of drawing never hold the server's interpreter or compete with the first predictions.
"""

from __future__ import annotations

import json
import os
import sys

from .compare import draw_specs


def main() -> int:
    if hasattr(os, "nice"):
        os.nice(15)
    for spec in json.load(sys.stdin):  # one bundle's unreadable history costs its own chart
        try:
            draw_specs([spec])
        except Exception as exc:
            print(f"chart {spec.get('kind')} not drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
