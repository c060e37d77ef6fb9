"""Where a figure was measured (hardware.py), and how a figure from another kind of CPU is shown."""

from sports_classifier import hardware
from sports_classifier.app.compare import measured_on_cell


def test_int8_kind_follows_the_flags_that_change_int8_results():
    assert hardware.int8_kind(frozenset({"avx2", "avx512f", "avx512_vnni"}), "x86_64") == "x86-vnni"
    assert hardware.int8_kind(frozenset({"avx2", "avx_vnni"}), "x86_64") == "x86-vnni"
    assert hardware.int8_kind(frozenset({"avx2", "avx512f"}), "x86_64") == "x86-avx2"  # AVX-512 without VNNI
    assert hardware.int8_kind(frozenset({"avx2", "fma"}), "x86_64") == "x86-avx2"
    assert hardware.int8_kind(frozenset({"sse4_2"}), "x86_64") == "x86"
    assert hardware.int8_kind(frozenset({"asimd", "asimddp"}), "aarch64") == "aarch64"


def test_measured_on_names_this_machine():
    here = hardware.measured_on(threads=3)
    assert here["threads"] == 3 and here["cpu"] and here["int8_kind"] == hardware.int8_kind()
    assert set(here["flags"]) <= set(hardware.FLAGS.values())
    text = hardware.describe(here)
    assert here["cpu"] in text and "3 threads" in text
    assert hardware.describe(None) == "an unrecorded CPU"


def test_a_figure_from_another_kind_of_cpu_is_labelled():
    here = hardware.measured_on()
    other = dict(here, int8_kind="x86-avx2" if here["int8_kind"] != "x86-avx2" else "x86-vnni", cpu="Other CPU")
    assert "another kind of CPU" in measured_on_cell(other) and "Other CPU" in measured_on_cell(other)
    assert "another kind" not in measured_on_cell(here)
    assert measured_on_cell(None) == "not recorded"
    assert hardware.same_int8_kind(other) is False and hardware.same_int8_kind(here) is True
    assert hardware.same_int8_kind({"cpu": "x"}) is None


def test_about_and_the_status_say_which_engine_serves_and_why():
    """The bundled Lite0 (int8 with its self-check): About names this server's CPU and the
    check's outcome; the status keeps the engine and why."""
    from pathlib import Path

    from sports_classifier.app.about import engine_markdown
    from sports_classifier.app.registry import ModelRegistry
    from sports_classifier.hub import parse_model_sources

    lite0 = Path(__file__).resolve().parents[2] / "models" / "lite0"
    registry = ModelRegistry(parse_model_sources(str(lite0)), measure_latency=False)
    registry.get("lite0")
    text = engine_markdown(registry)
    assert f"This server: {hardware.describe(hardware.measured_on())}" in text
    assert "self-check passed" in text and "close calls" in text and "onnxruntime-int8" in text
    assert registry.status()["lite0"].startswith("ready (onnxruntime-int8, int8, self-check passed")
