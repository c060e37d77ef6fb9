"""Named training recipes (``sports-classifier train --recipe NAME``), shipped as JSON files in
this folder: each reproduces a bundled model with one command. (Not "presets": on the Hub a
preset is a saved model.)

A recipe is a ``TrainConfig`` object, or an ensemble: ``{"ensemble": [member, ...]}`` where each
member is the name of another recipe or an inline ``TrainConfig`` object with a ``"name"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...config import TrainConfig
from ...errors import ConfigError

RECIPES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class EnsembleRecipe:
    """Train each member with its own config, then average them (``ensemble.train_ensemble``)."""

    members: dict[str, TrainConfig]


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def named_recipe(name: str) -> TrainConfig | EnsembleRecipe:
    path = RECIPES_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(available())}")
    return load_recipe(path)


def load_recipe(path: str | Path) -> TrainConfig | EnsembleRecipe:
    """Read a named recipe or ``--config`` JSON file: a TrainConfig, or an ensemble of them."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not (isinstance(data, dict) and "ensemble" in data):
        return TrainConfig.from_dict(data)
    if set(data) != {"ensemble"} or not isinstance(data["ensemble"], list) or len(data["ensemble"]) < 2:
        raise ConfigError(f"{path}: an ensemble recipe is {{\"ensemble\": [member, member, ...]}} "
                          "with at least two members and no other keys")
    members: dict[str, TrainConfig] = {}
    for i, entry in enumerate(data["ensemble"]):
        if isinstance(entry, str):
            member = named_recipe(entry)
            if isinstance(member, EnsembleRecipe):
                raise ConfigError(f"{path}: member {entry!r} is itself an ensemble")
            name = entry
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, member = entry["name"], TrainConfig.from_dict({k: v for k, v in entry.items() if k != "name"})
        else:
            raise ConfigError(f"{path}: ensemble member {i} must be a recipe name or an object "
                              "with a \"name\" and TrainConfig keys")
        if name in members:
            raise ConfigError(f"{path}: two ensemble members are named {name!r}")
        members[name] = member
    return EnsembleRecipe(members)
