from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("env, message", [
    ({"GENRET_PORT": "50o51"}, "GENRET_PORT must be an integer, got '50o51'"),
    ({"GENRET_GRACE_S": "soon"}, "GENRET_GRACE_S must be a number"),
    ({"GENRET_READ_ONLY": "maybe"}, "GENRET_READ_ONLY must be a boolean"),
    ({"GENRET_LEXICAL_TENANT_MAX_DOCS": "0"}, "lexical_tenant_max_docs must be at least 1, got 0"),
    ({"GENRET_LEXICAL_IDLE_S": "0.5"}, "lexical_idle_s must be at least 1, got 0.5"),
    ({"GENRET_PORT": "70000"}, "port must be at most 65535"),
    ({"GENRET_MAX_INFLIGHT": "-3"}, "max_inflight must be at least 1"),
    ({"GENRET_SCORING": "logits"}, "scoring must be one of 'vocab', 'children', got 'logits'"),
    ({"GENRET_DEFAULT_BEAM": "300"}, "default_beam must be at most max_beam (200), got 300"),
    ({"GENRET_LEXICAL_MAX_DOCS": "5000"}, "GENRET_LEXICAL_MAX_DOCS is no longer read: set GENRET_LEXICAL_TENANT_MAX_DOCS"),
    ({"GENRET_GENERATIVE_FEEDBACK": "-1"}, "generative_feedback must be at least 0, got -1.0"),
    ({"GENRET_GENERATIVE_FEEDBACK": "nan"}, "generative_feedback must be a finite number, got nan"),
])
def test_a_bad_setting_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(environ=env)


def test_every_problem_is_named_at_once_and_good_values_pass() -> None:
    with pytest.raises(ValueError) as err:
        load_config({"write_workers": 0, "log_format": "xml"}, environ={})
    assert "write_workers must be at least 1" in str(err.value) and "log_format must be one of" in str(err.value)
    cfg = load_config(environ={"GENRET_READ_ONLY": "off", "GENRET_QDRANT_PORT": "0", "GENRET_METRICS_PORT": "-1"})
    assert cfg.read_only is False and cfg.qdrant_port == 0 and cfg.metrics_port == -1


def test_the_cli_names_a_bad_setting_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "GENRET_LEXICAL_TENANT_MAX_DOCS": "-1"}
    out = subprocess.run([sys.executable, "-m", "genret.cli", "serve", "--index-dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "lexical_tenant_max_docs must be at least 1, got -1" in out.stderr
    assert "Traceback" not in out.stderr
