"""Config resolution by model family: every registered model resolves to a complete config."""
import pytest

from app.config.load import CONFIG_DIR, defaults, load_config, model_config_file
from models import list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_resolves_its_family_config(name):
    cfg = load_config(model=name)
    assert cfg["model"]["name"] == name
    assert {s: set(v) for s, v in cfg.items()} == {s: set(v) for s, v in defaults().items()}
    family = model_config_file(name)
    assert family is not None and name.startswith(family.stem)
    expected = 2e-4 if name.startswith("towernet") else defaults()["optimizer"]["weight_decay"]
    assert cfg["optimizer"]["weight_decay"] == expected


def test_a_model_file_beats_its_family_and_unknown_families_get_the_defaults(monkeypatch, tmp_path):
    for name in ("towernet.yaml", "default.yaml"):
        (tmp_path / name).write_text((CONFIG_DIR / name).read_text())
    (tmp_path / "towernet_se.yaml").write_text("_base_: towernet.yaml\ntrain:\n  epochs: 7\n")
    monkeypatch.setattr("app.config.load.CONFIG_DIR", tmp_path)
    assert model_config_file("towernet_se") == tmp_path / "towernet_se.yaml"
    assert model_config_file("towernet_cbam") == tmp_path / "towernet.yaml"
    assert model_config_file("resnet50_se") is None
    assert load_config(model="towernet_se")["train"]["epochs"] == 7
    assert load_config(model="towernet_cbam")["train"]["epochs"] == defaults()["train"]["epochs"]
