"""``push`` over plain HTTP (Xet off) shows how far it is (issue 26): a bar while the files are
read, a line for the commit and one when it is done; ``--quiet`` shows nothing. Before, a push
of a 40 MB bundle printed nothing until its URL."""

from __future__ import annotations

from helpers.cli import run_cli
from helpers.hub_server import FakeHub, use_hub

TOKEN = "hf_WriteTokenWriteToken0123456789abcd"


def test_push_shows_progress_unless_quiet(tiny_bundle, monkeypatch, tmp_path):
    hub = FakeHub()
    hub.add_token(TOKEN, write=True)
    with hub:
        use_hub(monkeypatch, hub.url, tmp_path / "hf-home")
        code, out, err = run_cli("push", "--model", tiny_bundle, "--repo", "alice/loud", "--token", TOKEN)
        assert code == 0, err
        assert "push: reading files" in err and "push: one commit of" in err and "to alice/loud" in err
        assert "push: done in" in err and TOKEN not in err
        assert out.strip().startswith(f"{hub.url}/alice/loud/commit/")
        code, out, err = run_cli("push", "--model", tiny_bundle, "--repo", "alice/quiet", "--token", TOKEN,
                                 "--quiet")
        assert code == 0 and err == "" and out.strip().startswith(f"{hub.url}/alice/quiet/commit/")
