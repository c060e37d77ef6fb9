"""The test tiers, by cost (issue 25). Each test belongs to one:

- ``unit``: no TensorFlow, seconds; runs from a venv made from requirements.txt alone
  (serving and app tests on the committed ONNX-only bundles in tests/fixtures/);
- ``training``: needs the train extra (TensorFlow/Keras, tf2onnx, onnx, scikit-image): training,
  export, the Keras runtime; bundles trained once per session per config (``trained_bundle``);
- ``e2e``: real images, servers, the browser, Hub servers, Ray clusters.

Select one with ``python -m pytest --tier unit`` (or ``-m unit``; ``--tier`` also skips
importing the other tiers' files, which a no-TensorFlow venv cannot import). Until the files
move into tests/unit, tests/training and tests/e2e, ``FILES`` says where each file belongs and
``TESTS`` names the tests that belong elsewhere than their file; afterwards a file's folder is
its tier. A test that uses a fixture of ``TF_FIXTURES`` is in the training tier at least.
"""

from __future__ import annotations

from pathlib import Path

TIERS = ("unit", "training", "e2e")
TF_FIXTURES = {"trained_bundle", "trained_tiny_bundle", "trained_sports_tiny"}  # they train

# file -> its tier (where it belongs once the files are moved)
FILES = {
    # no TensorFlow
    "test_app_handlers.py": "unit",
    "test_architecture.py": "unit",
    "test_batch.py": "unit",
    "test_bundle.py": "unit",
    "test_classifier.py": "unit",
    "test_compare.py": "unit",
    "test_config.py": "unit",
    "test_data_summary.py": "unit",
    "test_function_length.py": "unit",
    "test_hostile_inputs.py": "unit",
    "test_images.py": "unit",
    "test_import_contracts.py": "unit",
    "test_layering_hlayer.py": "unit",
    "test_metrics.py": "unit",
    "test_speed_accuracy.py": "unit",
    "test_tiers_hlayer.py": "unit",
    "test_cli.py": "unit",
    "test_datasets.py": "unit",
    "test_runtime.py": "unit",
    # training, export, Keras: tests/training/ (their folder is their tier)
    # end to end
    "test_app.py": "e2e",
    "test_browser.py": "e2e",
    "test_hub.py": "e2e",
    "test_hub_olah.py": "e2e",
    "test_hub_wire.py": "e2e",
    "test_load.py": "e2e",
    "test_ray.py": "e2e",
    "test_real_images.py": "e2e",
    "test_reliability.py": "e2e",
    "test_resume.py": "e2e",
    "test_security.py": "e2e",
}

# "file::test" -> tier, for tests whose tier is not their file's (to be moved into a file of
# that tier). Tests that use a TF fixture need no entry.
TESTS = {
    # scikit-image's photos (train extra) make the out-of-distribution set
    "test_app_handlers.py::test_non_sport_images_leave_out_the_sports": "training",
    "test_app_handlers.py::test_threshold_command_stores_a_threshold_in_the_bundle": "training",
    # they train, export (onnx, tf2onnx) or build Keras networks
    "test_cli.py::test_evaluate_write_records_the_model_as_served": "training",
    "test_cli.py::test_errors_are_one_line_with_nonzero_exit": "training",
    "test_cli.py::test_train_cli_tiny": "training",
    "test_datasets.py::test_tf_dataset_batches_and_augments": "training",
    "test_datasets.py::test_batch_augmentation_depends_only_on_the_batch_number": "training",
    "test_hostile_inputs.py::test_train_into_an_existing_file_is_refused_before_training": "training",
    "test_layering_hlayer.py::test_the_feature_cache_runs_the_executor_its_caller_passes": "training",
}

def tier_of(path: str | Path, name: str, fixtures=()) -> str:
    """The tier of test ``name`` (without parameters) in file ``path``."""
    path = Path(path)
    tier = TESTS.get(f"{path.name}::{name}")
    if tier is None:
        tier = path.parent.name if path.parent.name in TIERS and path.parent.parent.name == "tests" else None
        tier = FILES.get(path.name, tier) if tier in (None, "unit") else tier
        tier = tier or "unit"
    if tier == "unit" and TF_FIXTURES & set(fixtures):
        tier = "training"
    return tier


def file_tiers(path: str | Path) -> set[str]:
    """Every tier that a test of this file may have (to skip files when one tier is asked for)."""
    path = Path(path)
    tiers = {tier_of(path, "")} | {t for key, t in TESTS.items() if key.split("::")[0] == path.name}
    if "unit" in tiers:
        tiers.add("training")  # a test may use a TF fixture
    return tiers
