import configparser
import re

import pytest
from conftest import ROOT

from mlkit.core import _KEYS, DEFAULTS, ConfigError, find_root, load_settings


def test_project_settings_file_documents_every_key_with_its_default():
    s = load_settings(ROOT, environ={})
    assert s.root == ROOT and s.host == "127.0.0.1" and s.wandb_mode == "auto"
    assert [getattr(s, k) for k in ("promote_margin", "latency_budget_ms")] == [
        DEFAULTS["promote_margin"],
        DEFAULTS["latency_budget_ms"],
    ]
    # every key appears once, as "# key = default" under its section: the defaults themselves live in mlkit.core
    shown, section = {}, None
    for line in (ROOT / "settings.ini").read_text().splitlines():
        if found := re.fullmatch(r"\[(\w+)\]", line):
            section = found.group(1)
        elif found := re.fullmatch(r"# (\w+) =(.*)", line):
            assert found.group(1) not in shown, f"{found.group(1)} is shown twice"
            shown[found.group(1)] = (section, found.group(2).strip())
    assert shown == {key: (where, default) for key, (where, _, default) in _KEYS.items()}
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "settings.ini")
    assert parser.sections() == ["storage", "tracking", "export", "registry", "serving", "sweep", "ab"]


def test_root_is_found_from_the_notebook_folder(monkeypatch):
    monkeypatch.delenv("MLKIT_ROOT", raising=False)
    assert find_root(ROOT / "nbs" / "experiments") == ROOT


def test_environment_overrides_file_and_paths_resolve_against_root(tmp_path):
    (tmp_path / "settings.ini").write_text("[storage]\nruns_dir = out/runs\n[serving]\nport = 4000\n")
    s = load_settings(tmp_path, environ={"MLKIT_PORT": "4100", "MLKIT_RUN_DB": "sqlite:///db/r.db"})
    assert s.port == 4100
    assert s.runs_dir == tmp_path / "out" / "runs"
    assert s.run_db == f"sqlite:///{tmp_path}/db/r.db"


@pytest.mark.parametrize(
    "ini, environ, message",
    [
        (
            "[serving]\nport = many\n",
            {},
            "[serving] port must be a TCP port, 1 to 65535. Got 'many' instead.",
        ),
        (
            "[serving]\nport = 70000\n",
            {},
            "[serving] port must be a TCP port, 1 to 65535. Got '70000' instead.",
        ),
        ("[serving]\nprot = 1\n", {}, "unknown key 'prot' in section [serving]"),
        ("[storage]\nport = 1\n", {}, "unknown key 'port' in section [storage]; it belongs [serving]"),
        (
            "",
            {"MLKIT_PARITY_MIN_AGREEMENT": "1.5"},
            "MLKIT_PARITY_MIN_AGREEMENT must be a number between 0 and 1",
        ),
        ("", {"MLKIT_WANDB_MODE": "on"}, "MLKIT_WANDB_MODE must be one of auto, offline, online, disabled"),
        ("[serving\nport = 1\n", {}, "is not a valid INI file"),
    ],
)
def test_bad_settings_name_the_key_and_value(tmp_path, ini, environ, message):
    (tmp_path / "settings.ini").write_text(ini)
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ=environ)
    assert message in str(err.value)


def test_wandb_auto_mode_follows_the_api_key(tmp_path, monkeypatch):
    s = load_settings(tmp_path, environ={})
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # W&B's own variable, when set, decides 'auto'
    assert s.resolved_wandb_mode == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert s.resolved_wandb_mode == "online"


def test_wandb_auto_mode_respects_wandb_mode(tmp_path, monkeypatch):
    s = load_settings(tmp_path, environ={})
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert s.resolved_wandb_mode == "disabled"
    assert load_settings(tmp_path, environ={"MLKIT_WANDB_MODE": "offline"}).resolved_wandb_mode == "offline"
