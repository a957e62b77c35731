import dataclasses

import pytest

from research.config import overrides
from research.config.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class Inner:
  rate: float = 0.1
  names: tuple[str, ...] = ("a",)
  window: int | None = None


@dataclasses.dataclass(frozen=True)
class Outer:
  inner: Inner = dataclasses.field(default_factory=Inner)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  flag: bool = False
  text: str = ""


def test_values_are_parsed_by_field_type():
  cfg = overrides.apply(Outer(), [
      "inner.rate=3e-4", "inner.names=x,y", "inner.window=4096", "flag=true",
      "model.n_layers=4", "model.norm=layernorm", "text=a\\nb", "model.head_dim=none"])
  assert cfg.inner == Inner(rate=3e-4, names=("x", "y"), window=4096)
  assert cfg.flag is True and cfg.text == "a\nb"
  assert cfg.model.n_layers == 4 and cfg.model.norm == "layernorm" and cfg.model.head_dim is None
  assert overrides.apply(cfg, ["inner.window=none"]).inner.window is None


def test_typo_lists_close_matches():
  with pytest.raises(ValueError, match=r"unknown config key 'model.n_layer'.*did you mean model.n_layers"):
    overrides.apply(Outer(), ["model.n_layer=4"])


def test_wrong_type_names_the_key():
  with pytest.raises(ValueError, match=r"config key 'model.n_layers': 'four' is not a valid int"):
    overrides.apply(Outer(), ["model.n_layers=four"])
  with pytest.raises(ValueError, match=r"'maybe' is not a valid bool"):
    overrides.apply(Outer(), ["flag=maybe"])


def test_validation_still_runs():
  with pytest.raises(ValueError, match="ModelConfig.norm='batch' is not allowed"):
    overrides.apply(Outer(), ["model.norm=batch"])


def test_sections_and_malformed_items_are_refused():
  with pytest.raises(ValueError, match="is a section"):
    overrides.apply(Outer(), ["model=foo"])
  with pytest.raises(ValueError, match="not of the form key=value"):
    overrides.apply(Outer(), ["model.n_layers"])
  with pytest.raises(ValueError, match="is a value, not a section"):
    overrides.apply(Outer(), ["flag.x=1"])
