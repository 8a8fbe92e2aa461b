"""Load the effective configuration: packaged defaults, then a user file, then environment.

Layers are merged as plain mappings first and decoded once, so every error names the final
field path (``manager.budgets.ram``) and what was expected there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import msgspec
import platformdirs
import yaml

from voxbus.config.schema import Config, ModelSpec
from voxbus.config.units import dec_hook, enc_hook
from voxbus.errors import ConfigError

ENV_CONFIG = "VOXBUS_CONFIG"
ENV_NATS_URL = "VOXBUS_NATS_URL"
ENV_NATS_CREDS = "VOXBUS_NATS_CREDS"
ENV_NATS_TLS_CA = "VOXBUS_NATS_TLS_CA"
ENV_OVERRIDE_PREFIX = "VOXBUS__"


def defaults() -> dict[str, Any]:
    """The schema's defaults as a mapping (the base layer; default.yaml is their rendering)."""
    return msgspec.to_builtins(Config(), enc_hook=enc_hook)


def user_config_candidates() -> list[Path]:
    return [Path.cwd() / "voxbus.yaml", Path(platformdirs.user_config_dir("voxbus")) / "voxbus.yaml"]


def find_user_config(explicit: str | os.PathLike | None, env: Mapping[str, str]) -> Path | None:
    """--config wins, then $VOXBUS_CONFIG (both must exist), then the first default location found."""
    for chosen, what in ((explicit, "--config"), (env.get(ENV_CONFIG), f"${ENV_CONFIG}")):
        if chosen:
            path = Path(chosen).expanduser()
            if not path.is_file():
                raise ConfigError(f"{what}: no such file {path}")
            return path
    return next((p for p in user_config_candidates() if p.is_file()), None)


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}:{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """VOXBUS_NATS_URL, VOXBUS_NATS_CREDS, and VOXBUS__A__B=value for any key (the value is read as YAML)."""
    over: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_OVERRIDE_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_OVERRIDE_PREFIX):].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = over
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    if env.get(ENV_NATS_URL):
        over = deep_merge(over, {"nats": {"url": env[ENV_NATS_URL]}})
    if env.get(ENV_NATS_CREDS):
        over = deep_merge(over, {"nats": {"creds": env[ENV_NATS_CREDS]}})
    if env.get(ENV_NATS_TLS_CA):
        over = deep_merge(over, {"nats": {"tls_ca": env[ENV_NATS_TLS_CA]}})
    return over


def _split_path(message: str) -> tuple[str, str]:
    """msgspec says '... - at `$.manager.budgets.ram`': return ('manager.budgets.ram', '...')."""
    if " - at `$" in message:
        text, _, where = message.rpartition(" - at `$")
        return where.rstrip("`").lstrip("."), text
    return "", message


def _field_path(message: str, parent: str = "") -> str:
    path, text = _split_path(message)
    path = ".".join(p for p in (parent, path) if p)
    return f"{path}: {text}" if path else text


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The effective Config. `overrides` (from CLI flags) are applied last."""
    env = os.environ if env is None else env
    merged = defaults()
    origin = "default config"
    user = find_user_config(path, env)
    if user is not None:
        try:
            text = user.read_text()
        except OSError as exc:
            raise ConfigError(f"{user}: cannot read ({exc.strerror})") from None
        merged = deep_merge(merged, _read_yaml(text, str(user)))
        origin = str(user)
    env_layer = env_overrides(env)
    if env_layer:
        merged = deep_merge(merged, env_layer)
        origin += " + environment"
    if overrides:
        merged = deep_merge(merged, overrides)
    return decode_config(merged, origin)


def decode_config(data: Mapping[str, Any], origin: str = "config") -> Config:
    try:
        return msgspec.convert(data, Config, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        message = _field_path(str(exc))
        if message.startswith("models[...]"):
            message = _name_bad_model(data.get("models") or {}) or message
        raise ConfigError(f"{origin}: {message}") from None


def _name_bad_model(models: Mapping[str, Any]) -> str | None:
    """msgspec reports a bad dict value as models[...]; find and name the model it was."""
    for model_id, spec in models.items():
        try:
            msgspec.convert(spec, ModelSpec, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            return _field_path(str(exc), parent=f"models.{model_id}")
    return None


def config_to_yaml(config: Config) -> str:
    plain = msgspec.to_builtins(config, enc_hook=enc_hook)
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
