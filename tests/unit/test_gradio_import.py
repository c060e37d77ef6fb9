"""The app imports Gradio without rewriting Gradio's type stubs (sports_classifier/app/gradio_import.py).

Each check runs in a fresh interpreter: the hook acts only on the first ``import gradio``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from sports_classifier.app import gradio_import
hooked = gradio_import.skip_stub_rewrite() if sys.argv[2] == "hook" else None
import gradio.component_meta as meta
stubs = sorted(Path(meta.__file__).parent.joinpath("components").glob("*.pyi"))
before = {p.name: p.stat().st_mtime_ns for p in stubs}
import gradio as gr
class Shout(gr.Textbox):  # a component class defined after the import meets the hook too
    pass
with gr.Blocks() as demo:
    box = Shout(label="sport")
    box.submit(lambda s: s.upper(), box, box)
config = demo.get_config_file()
print(json.dumps({"hooked": hooked, "again": gradio_import.skip_stub_rewrite(),
                  "no_op": meta.create_or_modify_pyi is gradio_import._no_stub_rewrite,
                  "components": len(config["components"]), "stubs": len(stubs),
                  "unchanged": before == {p.name: p.stat().st_mtime_ns for p in stubs}}))
"""


def run_check(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHECK, str(ROOT), mode], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_gradio_builds_pages_with_its_stub_writer_skipped():
    got = run_check("hook")
    assert got["hooked"] is True and got["again"] is True and got["no_op"] is True
    assert got["components"] >= 1 and got["stubs"] > 20 and got["unchanged"]


def test_the_hook_says_when_it_came_too_late():
    got = run_check("no hook")  # Gradio imported first: its own stub writer stays, and the hook says so
    assert got["hooked"] is None and got["again"] is False and got["no_op"] is False
