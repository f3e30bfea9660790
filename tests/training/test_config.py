"""Config schema: unknown keys name the closest valid key, overrides, YAML round trip, docs in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deepmetric.config import Config, config_keys, config_to_yaml, load_config, save_config
from deepmetric.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


@pytest.mark.parametrize(
    ("override", "unknown", "expected"),
    [
        ("optimizer.lrr=0.1", "optimizer.lrr", "optimizer.lr"),
        ("trainer.stpes=5", "trainer.stpes", "trainer.steps"),
        ("trainr.steps=5", "trainr", "trainer"),
        ("sed=3", "sed", "seed"),
        ("lr=0.1", "lr", "optimizer.lr"),  # right key, wrong section
        ("trainer.lr=0.1", "trainer.lr", "optimizer.lr"),
        ("eval.select_metrc=nmi", "eval.select_metrc", "eval.select_metric"),
    ],
)
def test_unknown_key_names_closest_valid_key(override: str, unknown: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert f"unknown config key '{unknown}'; did you mean '{expected}'?" in str(info.value)


def test_unknown_key_in_yaml_file_is_reported_with_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  embeding_dim: 64\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.embeding_dim'; did you mean 'model\.embedding_dim'\?"):
        load_config(path)


def test_overrides_parse_yaml_values_and_nest() -> None:
    config = load_config(
        {"optimizer": {"lr": 0.5}},
        ["optimizer.lr=0.001", "trainer.amp=false", "eval.k_values=[1, 10]", "loss.params.margin=0.2",
         "model.pretrained=false", "data.root=/tmp/x"],
    )
    assert config.optimizer.lr == 0.001
    assert config.trainer.amp is False
    assert config.eval.k_values == [1, 10]
    assert config.loss.params == {"margin": 0.2}
    assert config.model.pretrained is False
    assert config.data.root == "/tmp/x"
    # untouched keys keep the schema defaults
    assert config.optimizer.backbone_lr_mult == Config().optimizer.backbone_lr_mult == 0.1


def test_bad_values_and_malformed_overrides_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="optimizer.lr"):
        load_config(None, ["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match="no '='"):
        load_config(None, ["optimizer.lr"])
    with pytest.raises(ConfigError, match="steps OR trainer.epochs"):
        load_config(None, ["trainer.steps=3", "trainer.epochs=2"])
    with pytest.raises(ConfigError, match="scheduler.name"):
        load_config(None, ["scheduler.name=linear"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_config(None, ["seed=7", "optimizer.betas=[0.8, 0.9]", "loss.params.margin=0.3", "trainer.epochs=4"])
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    again = load_config(path)
    assert again == config
    assert config_to_yaml(again) == path.read_text()
    assert yaml.safe_load(path.read_text())["seed"] == 7
    assert not list(path.parent.glob("*.tmp"))


def test_python_api_assignment_is_validated() -> None:
    config = Config()
    with pytest.raises(ValueError):
        config.optimizer.lrr = 0.1  # type: ignore[attr-defined]


def test_docs_list_every_key_with_its_default() -> None:
    text = DOCS.read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_.]+)` \| `([^`]*)` \|", text, flags=re.M))
    defaults = Config().to_dict()
    for key in config_keys():
        assert key in rows, f"docs/config.md lacks {key}"
        value = defaults
        for part in key.split("."):
            value = value[part]
        assert yaml.safe_load(rows[key]) == value, key


def test_docs_tables_are_generated_from_the_schema() -> None:
    from deepmetric.config_docs import update_config_docs

    text = DOCS.read_text()
    assert update_config_docs(text) == text, "docs/config.md is stale: run python -m deepmetric.config_docs docs/config.md"


BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['x'] * 9)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
)


def test_alias_bomb_is_refused_before_it_grows(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 700  # 9^9 = 387 million strings once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="aliases"):
        load_config(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: it did not expand
    with pytest.raises(ConfigError, match="aliases"):
        load_config(None, [f"data.params={{{BOMB.replace(chr(10), ', ')}}}"])


def test_hostile_yaml_runs_no_code_and_huge_files_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "tag.yaml"
    path.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()
    big = tmp_path / "big.yaml"
    big.write_text("seed: 0\n" + "#" * (2 << 20))
    with pytest.raises(ConfigError, match="more than a config can be"):
        load_config(big)
    hand_written = tmp_path / "anchors.yaml"
    hand_written.write_text("optimizer: &o {lr: 0.001}\nscheduler: {warmup_steps: 3}\n")
    assert load_config(hand_written).optimizer.lr == 0.001


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("skip_bad=True", "data.params.skip_bad"),  # a loader parameter given at the top level
        ("data.skip_bad=true", "did you mean 'data.params.skip_bad'"),
        ("loss.margin=0.2", "did you mean 'loss.params.margin'"),
        ("trainer.lr=0.1", "did you mean 'optimizer.lr'"),
    ],
)
def test_misplaced_builder_parameters_point_at_params(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_unknown_names_use_correct_plurals() -> None:
    from deepmetric.losses import build_loss

    with pytest.raises(ConfigError, match="Valid losses: "):
        build_loss("tripplet")
