"""Settings sections: a plugin's own keys, flat or in its table, checked like the core's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from asyncworker import App
from asyncworker import settings as settings_mod
from asyncworker.contrib.vision import VisionPlugin, VisionSettings, deployment_config
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.plugins import Plugin, load_plugin
from asyncworker.settings import SECRET, Section, Settings


@dataclass(slots=True)
class CacheSettings(Section):
    section: ClassVar[str] = "cache"
    cache_url: str = "redis://127.0.0.1:6379/1"
    cache_ttl: float = 60.0
    cache_token: str | None = field(default=None, metadata=SECRET)


class CachePlugin(Plugin):
    name = "cache"
    settings = CacheSettings


#: An instance, as ``worker_plugins`` may name one.
cache_plugin = CachePlugin()


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def load(path: Path | None = None, environ: dict[str, str] | None = None,
         **overrides: Any) -> Settings:
    return settings_mod.load(path, overrides, environ or {}, sections=[VisionSettings])


def test_flat_keys_and_the_sections_table(tmp_path: Path) -> None:
    s = load(toml(tmp_path, 'gpt_model = "flat"\ns3_bucket = "b"\n'
                            '[vision]\ngpt_max_retries = "7"\n'))
    vision = s.section(VisionSettings)
    assert (vision.gpt_model, vision.s3_bucket, vision.gpt_max_retries) == ("flat", "b", 7)
    assert s.section(VisionSettings) is vision and not hasattr(s, "gpt_model")


def test_environment_and_overrides_reach_sections(tmp_path: Path) -> None:
    env = {"ASYNCWORKER_GPT_MODEL": "from-env", "ASYNCWORKER_GPT_TIMEOUT": "2.5",
           "ASYNCWORKER_S3_ENDPOINT_URL": "none", "ASYNCWORKER_UNRELATED": "ignored"}
    s = load(toml(tmp_path, 's3_endpoint_url = "http://s3"\n[vision]\ngpt_model = "file"\n'),
             env, gpt_image_mode="presigned_url")
    vision = s.section(VisionSettings)
    assert vision.gpt_model == "from-env" and vision.gpt_timeout == 2.5
    assert vision.s3_endpoint_url is None and vision.gpt_image_mode == "presigned_url"


@pytest.mark.parametrize(("content", "match"), [
    ("gpt_modle = 'x'", "unknown setting 'gpt_modle' in .*c.toml"),
    ("[vision]\ngpt_modle = 'x'", "unknown setting 'vision.gpt_modle' in .*c.toml"),
    ("[vision]\nworker_concurrency = 3", "unknown setting 'vision.worker_concurrency'"),
    ("[vison]\ngpt_model = 'x'", "unknown setting 'vison'"),
    ("vision = 3", "invalid value 3 for vision"),
    ("gpt_max_retries = 'many'", r"invalid value 'many' for gpt_max_retries \(from"),
    ("[vision]\ngpt_timeout = 'soon'", r"invalid value 'soon' for vision.gpt_timeout"),
])
def test_bad_section_keys_are_reported(tmp_path: Path, content: str, match: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=match):
        load(toml(tmp_path, content))


def test_a_section_nobody_declares_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'gpt_model'"):
        settings_mod.load(toml(tmp_path, "gpt_model = 'x'"), environ={})
    with pytest.raises(ImproperlyConfigured, match="no settings section 'vision'"):
        settings_mod.load(environ={"ASYNCWORKER_GPT_MODEL": "x"}).section(VisionSettings)


def test_sections_cannot_clash() -> None:
    @dataclass(slots=True)
    class Clash(Section):
        section: ClassVar[str] = "clash"
        gpt_model: str = "x"

    @dataclass(slots=True)
    class Shadow(Section):
        section: ClassVar[str] = "worker_concurrency"

    @dataclass(slots=True)
    class Twin(Section):
        section: ClassVar[str] = "vision"

    base = Settings().with_sections([VisionSettings])
    for kind in (Clash, Shadow):
        with pytest.raises(ImproperlyConfigured, match="reuses names"):
            base.with_sections([kind])
    with pytest.raises(ImproperlyConfigured, match="declared by both"):
        base.with_sections([Twin])
    assert base.with_sections([VisionSettings]).sections == base.sections


def test_as_dict_hides_credentials() -> None:
    s = settings_mod.load(
        overrides={"broker_url": "amqp://u:pw@h//", "cache_token": "t0ken"},
        environ={"ASYNCWORKER_GPT_API_KEY": "sk-secret"},
        sections=[VisionSettings, CacheSettings])
    text = json.dumps(s.as_dict())
    assert "pw@" not in text and "t0ken" not in text and "sk-secret" not in text
    data = s.as_dict()
    assert data["broker_url"] == "amqp://u:***@h//"
    assert data["vision"]["gpt_api_key"] == "***" and data["vision"]["s3_secret_access_key"] is None
    assert data["cache"] == {"cache_url": "redis://127.0.0.1:6379/1", "cache_ttl": 60.0,
                             "cache_token": "***"}
    assert s.as_dict(redact=False)["cache"]["cache_token"] == "t0ken"


def test_app_reads_its_plugins_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCWORKER_CONFIG", raising=False)
    monkeypatch.setenv("ASYNCWORKER_GPT_MODEL", "env-model")
    app = App("t", gpt_max_retries=1)  # code settings may name a plugin's keys
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'gpt_max_retries'"):
        _ = app.settings
    app.use(VisionPlugin())
    vision = app.settings.section(VisionSettings)
    assert (vision.gpt_model, vision.gpt_max_retries) == ("env-model", 1)
    app.configure(gpt_model="cli-model")
    assert app.settings.section(VisionSettings).gpt_model == "cli-model"


def test_worker_plugins_are_enabled_before_their_keys_are_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCWORKER_CONFIG", raising=False)
    monkeypatch.delenv("ASYNCWORKER_WORKER_PLUGINS", raising=False)
    path = toml(tmp_path, 'worker_plugins = ["asyncworker.contrib.vision:VisionPlugin"]\n'
                          'gpt_model = "m"\n')
    app = App("t", config_file=str(path), worker_plugins=[f"{__name__}:CachePlugin"])
    vision = app.settings.section(VisionSettings)  # the file's list wins over the code's
    assert [p.name for p in app.plugins] == [
        "beat", "events", "monitoring", "worker_lost", "parked", "vision"]
    assert vision.gpt_model == "m"
    assert "workers.ai.tasks.gpt5_analysis_task" in app.tasks

    monkeypatch.setenv("ASYNCWORKER_WORKER_PLUGINS", f"{__name__}:cache_plugin")
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'gpt_model'"):
        _ = App("t2", config_file=str(path)).settings  # vision is no longer enabled

    monkeypatch.setenv("ASYNCWORKER_WORKER_PLUGINS",
                       f'["{__name__}:cache_plugin", "asyncworker.contrib.vision:VisionPlugin"]')
    app = App("t3", config_file=str(toml(tmp_path, "[cache]\ncache_ttl = 5\n")))
    s = app.settings
    assert app.plugins[5] is cache_plugin
    assert [p.name for p in app.plugins] == [
        "beat", "events", "monitoring", "worker_lost", "parked", "cache", "vision"]
    assert s.section(CacheSettings).cache_ttl == 5.0
    assert app.settings is s  # loaded once


@pytest.mark.parametrize(("spec", "match"), [
    ("no.such.module:Plugin", "cannot import 'no.such.module:Plugin'"),
    (f"{__name__}:missing", "has no attribute 'missing'"),
    (f"{__name__}:CacheSettings", "is not an asyncworker Plugin"),
])
def test_bad_plugin_names(spec: str, match: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=match):
        load_plugin(spec)


def test_default_config_is_package_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default app's file comes from the package; ASYNCWORKER_CONFIG and --config win."""
    assert deployment_config().is_file()
    monkeypatch.delenv("ASYNCWORKER_CONFIG", raising=False)

    def app() -> App:
        fresh = App("asyncworker", config_file=deployment_config())
        fresh.use(VisionPlugin())
        return fresh

    assert "vision_analysis" in app().settings.task_queues
    monkeypatch.setenv("ASYNCWORKER_CONFIG", str(toml(tmp_path, "worker_concurrency = 3")))
    from_env = app()
    assert from_env.settings.worker_concurrency == 3 and not from_env.settings.task_queues
    other = tmp_path / "other.toml"
    other.write_text("worker_concurrency = 4\n[vision]\ngpt_model = 'x'\n")
    configured = app()
    configured.configure(config_file=str(other))
    assert configured.settings.worker_concurrency == 4
    assert configured.settings.section(VisionSettings).gpt_model == "x"
    assert [layer.name for layer in configured.settings_sources()][:2] == [
        "App('asyncworker')", str(other)]
