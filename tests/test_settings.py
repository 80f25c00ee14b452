"""The settings object: one sub-model per layer, read from the same flat POLICYQA_<FIELD>
environment variables as before the split (issue 14), overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from corpus.settings import LAYER_OF, LAYERS, Settings

# One setting of each layer, with a value other than its default, as an operator sets it.
ENVIRONMENT = {
    "corpus": ("POLICYQA_CHUNK_SIZE", "chunk_size", "420", 420),
    "index": ("POLICYQA_INDEX_DIR", "index_dir", "/srv/policyqa/index", Path("/srv/policyqa/index")),
    "qa": ("POLICYQA_TOP_K", "top_k", "7", 7),
    "service": ("POLICYQA_PORT", "port", "9123", 9123),
    "bots": ("POLICYQA_WECHAT_TOKEN", "wechat_token", "tok-123", "tok-123"),
    "eval": ("POLICYQA_CMRC_PATH", "cmrc_path", "/data/cmrc.json", Path("/data/cmrc.json")),
}


def test_every_setting_belongs_to_exactly_one_layer():
    assert set(ENVIRONMENT) == set(LAYERS)
    names = [name for model in LAYERS.values() for name in model.model_fields]
    assert len(names) == len(set(names)) == len(LAYER_OF)
    assert not set(names) & set(LAYERS)  # no setting is named like a layer


@pytest.mark.parametrize("layer", sorted(ENVIRONMENT))
def test_each_layer_reads_the_unchanged_environment_variable_names(layer, monkeypatch):
    variable, name, raw, value = ENVIRONMENT[layer]
    monkeypatch.setenv(variable, raw)
    settings = Settings()
    assert getattr(getattr(settings, layer), name) == value
    # Keywords (what tests and the CLI pass) win over the environment, flat or by layer.
    assert getattr(getattr(Settings(**{name: value}), layer), name) == value


def test_flat_keywords_and_copies_reach_their_layer():
    settings = Settings(index_dir="/tmp/a", top_k=3)
    assert settings.index.index_dir == Path("/tmp/a") and settings.qa.top_k == 3
    copy = settings.model_copy(update={"port": 8123, "top_k": 4})
    assert (copy.service.port, copy.qa.top_k, settings.qa.top_k) == (8123, 4, 3)
    assert copy.index is settings.index  # untouched layers are shared, as model_copy does
    assert Settings(**settings.model_dump()).qa.top_k == 3
    assert Settings(**settings.flat_dump(mode="json")).index.index_dir == Path("/tmp/a")
    assert set(settings.flat_dump()) == set(LAYER_OF)


def test_a_flat_read_says_where_the_setting_lives_now():
    with pytest.raises(AttributeError, match=r"settings\.index\.index_dir"):
        Settings().index_dir  # noqa: B018


def test_bad_values_are_refused_naming_the_setting():
    with pytest.raises(ValidationError) as refused:
        Settings(top_k=0)
    assert refused.value.errors()[0]["loc"] == ("top_k",)
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Settings(chunk_size=100, chunk_overlap=100)


def test_cli_flags_override_the_environment(monkeypatch, tmp_path):
    from ui.cli import main
    from ui.cli_common import settings_with

    monkeypatch.setenv("POLICYQA_INDEX_DIR", str(tmp_path / "from-env"))
    assert settings_with(index_dir=tmp_path / "from-flag").index.index_dir == tmp_path / "from-flag"
    bad = CliRunner().invoke(main, ["build", "--embedder", "word2vec", "--index-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "embedder" in bad.output
    assert not (tmp_path / "manifest.json").exists()
