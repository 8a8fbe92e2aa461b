import subprocess
import sys

import pytest

from voxbus.config import Budget, ByteSize, Duration, config_to_yaml, load_config
from voxbus.errors import ConfigError


def write(tmp_path, text, name="voxbus.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_load_and_name_the_bundled_models():
    cfg = load_config(env={})
    assert cfg.nats.url is None and cfg.nats.embedded.port == 4222
    assert set(cfg.models) == {"gemma3-270m", "whisper-tiny-en", "piper-joe"}
    assert cfg.manager.defaults == {"llm": "gemma3-270m", "stt": "whisper-tiny-en", "tts": "piper-joe"}
    assert cfg.manager.budgets.ram == Budget(fraction=0.6)
    assert cfg.streams.audio.max_bytes == 2 * 1024**3
    assert cfg.client.backoff == pytest.approx(0.2)


def test_user_file_layers_over_defaults_key_by_key(tmp_path):
    path = write(tmp_path, """
manager:
  idle_ttl: 90s
  budgets: {ram: 4GiB}
models:
  whisper-tiny-en: {pinned: true}
  my-voice:
    kind: tts
    backend: piper
    source: {path: /models/voice.onnx}
""")
    cfg = load_config(path, env={})
    assert cfg.manager.idle_ttl == 90
    assert cfg.manager.budgets.ram.resolve(0) == 4 * 1024**3
    assert cfg.manager.budgets.vram == Budget(fraction=0.9)  # untouched sibling survives the merge
    assert cfg.models["whisper-tiny-en"].pinned and cfg.models["whisper-tiny-en"].backend == "faster_whisper"
    assert cfg.models["my-voice"].source.path == "/models/voice.onnx"


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "manager: {idle_ttl: 90s}\n")
    env = {"VOXBUS_NATS_URL": "nats://10.0.0.1:4222", "VOXBUS__MANAGER__IDLE_TTL": "5m",
           "VOXBUS__BATCHING__MAX_BATCH": "4"}
    cfg = load_config(path, env=env)
    assert cfg.nats.url == "nats://10.0.0.1:4222"
    assert cfg.manager.idle_ttl == 300
    assert cfg.batching.max_batch == 4


def test_config_file_from_env_variable(tmp_path):
    path = write(tmp_path, "nats: {prefix: lab}\n", "other.yaml")
    assert load_config(env={"VOXBUS_CONFIG": str(path)}).nats.prefix == "lab"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(env={"VOXBUS_CONFIG": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize("text, expected", [
    ("manager: {budgets: {ram: lots}}", r"manager\.budgets\.ram: expected a budget"),
    ("manager: {idle_ttl: soon}", r"manager\.idle_ttl: expected a duration"),
    ("streams: {audio: {max_bytes: huge}}", r"streams\.audio\.max_bytes: expected a byte size"),
    ("batching: {max_batch: 0}", r"batching\.max_batch: Expected `int` >= 1"),
    ("nats: {prot: 1}", r"nats: Object contains unknown field `prot`"),
    ("models: {gemma3-270m: {priority: high}}", r"models\.gemma3-270m\.priority: Expected `int`, got `str`"),
    ("models: {gemma3-270m: {kind: tts}}", r"models\.gemma3-270m: backend 'llama_cpp' cannot serve kind 'tts'"),
    ("models: {x: {kind: tts, backend: piper, source: {}}}", r"models\.x\.source: a model source needs exactly one"),
    ("manager: {defaults: {llm: nope}}", r"manager\.defaults\.llm names 'nope'"),
    ("manager: [1, 2", r"not valid YAML"),
    ("- just a list", r"top level must be a mapping"),
])
def test_bad_files_name_the_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_units():
    assert ByteSize.parse("512MiB") == 512 * 1024**2
    assert ByteSize.parse("8MB") == 8_000_000
    assert Duration.parse("250ms") == pytest.approx(0.25)
    assert Duration.parse("2h") == 7200
    assert Budget.parse("25%").resolve(1000) == 250
    assert Budget.parse(0.5).resolve(1000) == 500
    assert Budget.parse("1KiB").resolve(10**9) == 1024
    for bad in ("12 parsecs", "-1", True):
        with pytest.raises(ValueError):
            ByteSize.parse(bad)


def test_effective_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(env={})
    path = write(tmp_path, config_to_yaml(cfg))
    assert load_config(path, env={}) == cfg


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "voxbus", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


def test_cli_config_show_and_one_line_error(tmp_path):
    ok = run_cli("config", "show", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "whisper-tiny-en:" in ok.stdout and "prefix: vox" in ok.stdout
    bad = write(tmp_path, "manager:\n  budgets:\n    ram: lots\n", "broken.yaml")
    res = run_cli("config", "show", "--config", str(bad), cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "manager.budgets.ram" in lines[0] and "broken.yaml" in lines[0]


def test_cli_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for command in ("server", "config", "manager", "models"):
        assert command in res.stdout


def test_default_yaml_is_generated_from_the_schema():
    """One source of defaults: the schema. voxbus/config/default.yaml is its rendering (with the
    field docs as comments), and loading it gives exactly the schema's defaults."""
    from pathlib import Path

    import yaml

    from voxbus.config import decode_config
    from voxbus.config.render import render
    from voxbus.config.schema import Config

    shipped = Path(__file__).resolve().parent.parent / "voxbus" / "config" / "default.yaml"
    assert shipped.read_text() == render(), "run python -m voxbus.config.render voxbus/config/default.yaml"
    assert decode_config(yaml.safe_load(shipped.read_text())) == Config()
    assert "# Silence that ends an utterance." in shipped.read_text()


def test_configs_are_frozen():
    import msgspec

    cfg = load_config(env={})
    with pytest.raises(AttributeError):
        cfg.manager.idle_ttl = 5
    changed = msgspec.structs.replace(cfg, manager=msgspec.structs.replace(cfg.manager, idle_ttl=Duration(5)))
    assert changed.manager.idle_ttl == 5 and cfg.manager.idle_ttl == 600
