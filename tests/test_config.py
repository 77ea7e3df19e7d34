from __future__ import annotations

from genret.config import Config, load_config


def test_env_then_flags_override_defaults() -> None:
    env = {"GENRET_COLLECTION": "from-env", "GENRET_PORT": "6000", "GENRET_QDRANT_API_KEY": "s3cret",
           "GENRET_GRACE_S": "2.5", "UNRELATED": "x"}
    cfg = load_config({"collection": "from-flag", "port": None}, environ=env)
    assert cfg.collection == "from-flag" and cfg.port == 6000 and cfg.grace_s == 2.5
    assert cfg.redacted()["qdrant_api_key"] == "***" and "s3cret" not in str(cfg.redacted())
    assert load_config(environ={}) == Config()


def test_qdrant_url_selects_server_mode() -> None:
    assert not Config().uses_server
    assert load_config({"qdrant_url": "http://qdrant:6333"}, environ={}).uses_server
