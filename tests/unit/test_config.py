import pytest

from sports_classifier.config import ModelConfig, TrainConfig
from sports_classifier.errors import ConfigError


def test_train_config_round_trip():
    c = TrainConfig(backbone="efficientnet_lite2", classes=("a", "b"), fine_tune_stages=1)
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"backbone": "x", "learning_rte": 0.1})
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig().replace(epochz=3)


@pytest.mark.parametrize("bad", [{"mode": "fast"}, {"dropout": 1.5}, {"batch_size": 0}, {"head_epochs": -1}])
def test_out_of_range_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_model_config_checks_format_and_labels():
    base = dict(backbone="tiny_cnn", image_size=32, labels=("a", "b"))
    assert ModelConfig.from_dict(ModelConfig(**base).to_dict()).labels == ("a", "b")
    with pytest.raises(ConfigError, match="newer"):
        ModelConfig(**base, format_version=99)
    with pytest.raises(ConfigError, match="distinct"):
        ModelConfig(**(base | {"labels": ("a", "a")}))
    with pytest.raises(ConfigError, match="not a sports_classifier"):
        ModelConfig(**base, format="something-else")


def test_recipes_are_valid():
    from sports_classifier.training.recipes import available, named_recipe

    assert available()
    for name in available():
        named_recipe(name)
