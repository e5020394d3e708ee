"""Board profiles (sdk.config + firmware_configs/*.toml) and the shipped broker/systemd configs.

The Mosquitto tests start the real broker (/usr/sbin/mosquitto) with the shipped config files,
only the port and file paths substituted, and check the ACL with real clients.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime
import ipaddress
import json
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk.config as config_module
from sdk.config import (
    BoardSpec,
    CodecChoice,
    DeviceConfig,
    SourceKind,
    SourceSpec,
    TauTarget,
    config_dir,
    list_boards,
    load_board,
    load_config,
    parse_config,
    with_overrides,
)
from sdk.errors import ConfigError
from sdk.families import ModelFamily, model_family

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware_configs"
SHIPPED_BOARDS = ["pi3bplus", "pi4", "pi5", "qemu-aarch64", "zero2w", "zero2w-offload"]
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _no_config_dir_env(monkeypatch):
    """The shipped profiles, whatever the developer's shell exports."""
    monkeypatch.delenv(config_module.CONFIG_DIR_ENV, raising=False)


def toml_value(value: Any) -> str:
    """A tiny independent TOML writer for flat values (the module under test has none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def dump(doc: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def base_doc() -> dict[str, dict[str, Any]]:
    return {
        "board": {
            "name": "test",
            "cpu": "Cortex-A72 4x1.5GHz",
            "threads": 4,
            "memory_budget_mb": 256,
            "speed_factor": 2.5,
            "speed_factor_source": "made up for a test",
        },
        "device": {"device_id": "cam-01", "target_accuracy": 0.97},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    }


def write(tmp_path: Path, doc: dict[str, dict[str, Any]] | str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else dump(doc), encoding="utf-8")
    return path


def mutated(section: str, key: str, value: Any) -> dict[str, dict[str, Any]]:
    doc = base_doc()
    if value is DELETE:
        del doc[section][key]
    else:
        doc[section][key] = value
    return doc


DELETE = object()


# --------------------------------------------------------------------------- shipped profiles


def test_list_boards_is_exactly_the_shipped_files():
    assert list_boards() == SHIPPED_BOARDS
    assert config_dir() == FIRMWARE


@pytest.mark.parametrize("name", SHIPPED_BOARDS)
def test_every_shipped_board_loads(name):
    cfg = load_board(name)
    assert cfg.path == FIRMWARE / f"{name}.toml"
    assert cfg.board.name == name
    assert cfg.board.threads >= 1 and cfg.board.memory_budget_mb > 0 and cfg.board.speed_factor > 0
    assert len(cfg.board.speed_factor_source) > 40  # a real explanation, not a placeholder
    assert set(cfg.device.bits) <= {8, 6, 4, 2} and 8 in cfg.device.bits
    assert re.fullmatch(r"[A-Za-z0-9._-]+", cfg.device.device_id)
    assert cfg.broker.port in (1883, 8883)
    assert load_config(cfg.path) == cfg  # by path gives the same value


def test_shipped_board_facts():
    boards = {name: load_board(name).board for name in SHIPPED_BOARDS}
    qemu = boards.pop("qemu-aarch64")
    assert qemu.speed_factor == 1.0 and not qemu.emulate_timing
    assert "not a timing device" in qemu.speed_factor_source
    assert all(b.emulate_timing for b in boards.values())
    # Slowest to fastest: Zero 2 W < 3B+ < 4 < 5.
    assert boards["zero2w"].speed_factor > boards["pi3bplus"].speed_factor > boards["pi4"].speed_factor
    assert boards["pi4"].speed_factor > boards["pi5"].speed_factor
    assert boards["zero2w"].memory_budget_mb < 512  # the Zero 2 W has 512 MB in all
    assert boards["zero2w-offload"].speed_factor == boards["zero2w"].speed_factor  # the same board


# The published MobileNetV2 int8 figures (ms, multi-threaded XNNPACK, README table of Feb 8, 2022) the shipped
# factors are derived from, written out here independently of the profiles; 10.8 ms = the reference core.
REFERENCE_CORE_MS = 10.8
PI4_ARM64_MS, PI4_ARMV7_MS, PI3BPLUS_ARMV7_MS = 17.0, 20.0, 30.0
PI3BPLUS_MS = PI3BPLUS_ARMV7_MS * PI4_ARM64_MS / PI4_ARMV7_MS  # 64-bit OS: the Pi 4's ARM64/32-bit ratio, assumed
DERIVED_FACTORS = {
    "pi4": PI4_ARM64_MS / REFERENCE_CORE_MS,  # 1.57
    "pi3bplus": PI3BPLUS_MS / REFERENCE_CORE_MS,  # 2.36
    "zero2w": PI3BPLUS_MS * 1.4 / 1.0 / REFERENCE_CORE_MS,  # the same A53 cores at 1.0 instead of 1.4 GHz: 3.31
    "zero2w-offload": PI3BPLUS_MS * 1.4 / REFERENCE_CORE_MS,
    "pi5": PI4_ARM64_MS / 3 / REFERENCE_CORE_MS,  # estimate: the top of Raspberry Pi Ltd's 2-3x over the Pi 4: 0.52
}


@pytest.mark.parametrize(("name", "factor"), sorted(DERIVED_FACTORS.items()))
def test_shipped_factors_follow_from_the_published_figures(name, factor):
    board = load_board(name).board
    assert board.speed_factor == pytest.approx(factor, rel=0.03)  # rounded to 2 significant digits
    source = board.speed_factor_source
    assert "10.8" in source and "=" in source  # the arithmetic against the reference core is shown
    assert "XNNPACK" in source and ("ncnn" in source if name.startswith("zero2w") else True)
    assert f"{board.speed_factor:g}" in source


def test_shipped_family_tables():
    for name in SHIPPED_BOARDS:
        board = load_board(name).board
        if name == "qemu-aarch64":
            assert board.speed_factor_by_family == () and board.factor_for(ModelFamily.RESNET) == 1.0
            continue
        assert "Assumed" in board.speed_factor_by_family_source
        sf = board.speed_factor
        # dense convolutions gain less from int8 on the Pi than on x86, relative to MobileNetV2 (README)
        assert board.factor_for(ModelFamily.RESNET) == pytest.approx(sf * 1.3, rel=0.05)
        assert board.factor_for(ModelFamily.INCEPTION) == pytest.approx(sf * 1.5, rel=0.05)
        assert board.factor_for(ModelFamily.DENSENET) == pytest.approx(sf * 1.2, rel=0.05)
        for family in (ModelFamily.MOBILENET, ModelFamily.EFFICIENTNET, ModelFamily.DEFAULT, None):
            assert board.factor_for(family) == sf


@pytest.mark.parametrize("name", SHIPPED_BOARDS)
def test_to_dict_round_trips(name):
    cfg = load_board(name)
    assert parse_config(cfg.to_dict(), cfg.path) == cfg


def test_readme_documents_every_key():
    readme = (FIRMWARE / "README.md").read_text(encoding="utf-8")
    for cls in (BoardSpec, config_module.DeviceSettings, config_module.BrokerSettings):
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in readme, (
                f"{field.name} is not documented in firmware_configs/README.md"
            )
    for board in SHIPPED_BOARDS:
        assert f"{board}.toml" in readme


def test_public_api_is_pinned():
    assert sorted(config_module.__all__) == sorted(
        [
            "ALLOWED_BITS",
            "CONFIG_DIR_ENV",
            "BoardSpec",
            "BrokerSettings",
            "OutboxSettings",
            "CodecChoice",
            "DeviceConfig",
            "DeviceSettings",
            "SourceKind",
            "SourceSpec",
            "TauTarget",
            "config_dir",
            "list_boards",
            "load_board",
            "load_config",
            "parse_config",
            "parse_source",
            "with_overrides",
        ]
    )


# --------------------------------------------------------------------------- the happy path and defaults


def test_minimal_file_gets_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, base_doc()))
    assert isinstance(cfg, DeviceConfig)
    d, b = cfg.device, cfg.broker
    assert d.source == SourceSpec(SourceKind.SYNTHETIC)
    assert (d.fps_cap, d.deadline_ms, d.bits, d.codec) == (10.0, 100.0, (8,), CodecChoice.AUTO)
    assert (d.privacy, d.accuracy_drop_budget, d.telemetry_interval_s) == (False, 0.01, 5.0)
    assert d.tau_target == (TauTarget.ACCURACY, 0.97)
    assert (b.keepalive_s, b.qos_act, b.username, b.password_file, b.tls) == (30, 1, None, None, False)
    assert cfg.board.description == "" and cfg.board.emulate_timing is False


def test_values_are_frozen_and_slotted(tmp_path):
    cfg = load_config(write(tmp_path, base_doc()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.board.threads = 8  # type: ignore[misc]
    for value in (cfg, cfg.board, cfg.device, cfg.broker, cfg.device.source):
        assert not hasattr(value, "__dict__")


def test_bits_sorted_descending_and_escalation_target(tmp_path):
    doc = base_doc()
    doc["device"] = {"device_id": "x", "bits": [2, 8, 4], "target_escalation_rate": 0.25, "codec": "zstd"}
    d = load_config(write(tmp_path, doc)).device
    assert d.bits == (8, 4, 2)
    assert d.tau_target == (TauTarget.ESCALATION_RATE, 0.25)
    assert d.codec is CodecChoice.ZSTD and d.target_accuracy is None


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker.lan", "broker.lan", 1883, False),
        ("mqtts://broker.lan", "broker.lan", 8883, True),
        ("mqtt://10.0.0.2:1884", "10.0.0.2", 1884, False),
        ("mqtts://[::1]:9999/", "::1", 9999, True),
    ],
)
def test_broker_url_parts(tmp_path, url, host, port, tls):
    b = load_config(write(tmp_path, mutated("broker", "url", url))).broker
    assert (b.host, b.port, b.tls) == (host, port, tls)


def test_emulated_ms():
    board = load_board("pi4").board
    assert board.emulated_ms(10.0) == pytest.approx(10.0 * board.speed_factor)
    assert board.emulated_ms(10.0, "resnet") == pytest.approx(10.0 * board.factor_for(ModelFamily.RESNET))
    assert board.emulated_ms(10.0, ModelFamily.MOBILENET) == pytest.approx(10.0 * board.speed_factor)
    assert load_board("qemu-aarch64").board.emulated_ms(10.0, "resnet") == 10.0  # emulate_timing = false


# --------------------------------------------------------------------------- workload families

FAMILY_TABLE = '''[board]
name = "fam"
cpu = "Cortex-A72 4x1.5GHz"
threads = 4
memory_budget_mb = 256
speed_factor = 2.0
speed_factor_source = "made up for a test"
emulate_timing = true
speed_factor_by_family_source = "made up too"

[board.speed_factor_by_family]
{rows}

[device]
device_id = "cam-01"
target_accuracy = 0.97

[broker]
url = "mqtt://127.0.0.1:1883"
'''


def family_file(tmp_path: Path, rows: str, *, source: bool = True) -> Path:
    text = FAMILY_TABLE.format(rows=rows)
    if not source:
        text = text.replace('speed_factor_by_family_source = "made up too"\n', "")
    return write(tmp_path, text)


def test_family_table_picks_the_family_else_default_else_speed_factor(tmp_path):
    cfg = load_config(family_file(tmp_path, "resnet = 3\ndefault = 2.5\nmobilenet = 2.0"))
    b = cfg.board
    assert b.speed_factor_by_family == (  # in ModelFamily order, whatever the file's
        (ModelFamily.MOBILENET, 2.0), (ModelFamily.RESNET, 3.0), (ModelFamily.DEFAULT, 2.5))
    assert b.factor_for("resnet") == 3.0 and b.factor_for(ModelFamily.RESNET) == 3.0
    assert b.factor_for("efficientnet") == 2.5 and b.factor_for("default") == 2.5  # not listed: the default entry
    assert b.factor_for("mobilenet") == 2.0 and b.factor_for(None) == 2.0  # speed_factor itself
    assert b.speed_factor_by_family_source == "made up too"
    assert parse_config(cfg.to_dict(), cfg.path) == cfg  # round trip, the table included
    assert cfg.to_dict()["board"]["speed_factor_by_family"] == {"mobilenet": 2.0, "resnet": 3.0, "default": 2.5}
    without = load_config(family_file(tmp_path, "inception = 4"))
    assert without.board.factor_for("densenet") == 2.0  # no default entry: speed_factor
    with pytest.raises(ValueError, match=r"family must be one of mobilenet, .*got 'bogus'"):
        b.factor_for("bogus")


def test_a_profile_without_a_table_has_none_and_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, base_doc()))
    assert cfg.board.speed_factor_by_family == () and cfg.board.factor_for("resnet") == 2.5
    assert "speed_factor_by_family" not in cfg.to_dict()["board"]
    assert "speed_factor_by_family_source" not in cfg.to_dict()["board"]


def test_unknown_family_is_rejected_by_name(tmp_path):
    path = family_file(tmp_path, "resnt = 3")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "'resnt'" in msg and "[board.speed_factor_by_family]" in msg and str(path) in msg
    assert "did you mean 'resnet'" in msg and "allowed keys" in msg and "efficientnet" in msg


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("resnet = 0", "> 0.0"),
        ("resnet = -1", "> 0.0"),
        ('resnet = "fast"', "a number"),
        ("resnet = true", "a number"),
        ("mobilenet = 3.0", "the same as speed_factor (2)"),
    ],
)
def test_bad_family_values(tmp_path, rows, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(family_file(tmp_path, rows))


def test_the_table_must_be_a_table_and_needs_its_source(tmp_path):
    doc = base_doc()
    doc["board"]["speed_factor_by_family"] = 3
    with pytest.raises(ConfigError, match=r"speed_factor_by_family = 3 .*a table \[board.speed_factor_by_family\]"):
        load_config(write(tmp_path, doc))
    with pytest.raises(ConfigError, match=r"speed_factor_by_family_source is not"):
        load_config(family_file(tmp_path, "resnet = 3", source=False))


@pytest.mark.parametrize(
    ("model_name", "family"),
    [
        ("mobilenetv2_1.00_224", ModelFamily.MOBILENET),  # keras.applications.MobileNetV2
        ("mobilenet_1.00_224", ModelFamily.MOBILENET),
        ("MobileNetV3Small", ModelFamily.MOBILENET),
        ("mobilenetv2_fashion", ModelFamily.MOBILENET),  # converter/workloads.py
        ("NASNet", ModelFamily.MOBILENET),  # keras.applications.NASNetMobile: separable convolutions
        ("splitedge_reference", ModelFamily.MOBILENET),  # the MobileNetV2-like reference model
        ("splitedge_reference_stage1", ModelFamily.MOBILENET),
        ("reference_digits_96", ModelFamily.MOBILENET),
        ("efficientnetb0", ModelFamily.EFFICIENTNET),
        ("efficientnetv2-b0", ModelFamily.EFFICIENTNET),
        ("resnet50", ModelFamily.RESNET),
        ("resnet50v2", ModelFamily.RESNET),
        ("resnet50_fashion", ModelFamily.RESNET),
        ("vgg16", ModelFamily.RESNET),
        ("densenet121", ModelFamily.DENSENET),
        ("inception_v3", ModelFamily.INCEPTION),
        ("inception_resnet_v2", ModelFamily.INCEPTION),  # first match wins
        ("xception", ModelFamily.INCEPTION),
        ("convnext_tiny", ModelFamily.DEFAULT),
        ("", ModelFamily.DEFAULT),
        (None, ModelFamily.DEFAULT),
    ],
)
def test_model_family(model_name, family):
    assert model_family(model_name) is family


# --------------------------------------------------------------------------- the unknown-key rule


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("board", "thread", "threads"),
        ("board", "speedfactor", "speed_factor"),
        ("board", "speed_factor_by_familly", "speed_factor_by_family"),
        ("device", "fps", "fps_cap"),
        ("device", "target_acuracy", "target_accuracy"),
        ("broker", "keepalive", "keepalive_s"),
        ("broker", "zzz_unrelated", None),
    ],
)
def test_unknown_key_names_key_section_file_and_suggests(tmp_path, section, key, suggestion):
    path = write(tmp_path, mutated(section, key, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert repr(key) in msg and f"[{section}]" in msg and str(path) in msg
    assert "allowed keys" in msg and "device_id" in msg if section == "device" else "allowed keys" in msg
    if suggestion:
        assert f"did you mean {suggestion!r}" in msg
    else:
        assert "did you mean" not in msg


def test_unknown_section_is_rejected(tmp_path):
    doc = base_doc()
    doc["brokr"] = {"url": "mqtt://x"}
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=r"unknown section \[brokr\].*did you mean 'broker'"):
        load_config(path)


@pytest.mark.parametrize("section", ["board", "device", "broker"])
def test_missing_section(tmp_path, section):
    doc = base_doc()
    del doc[section]
    with pytest.raises(ConfigError, match=rf"section \[{section}\] is missing"):
        load_config(write(tmp_path, doc))


# --------------------------------------------------------------------------- wrong types and ranges

BAD_VALUES = [
    # (section, key, value, a fragment of what the message must say was expected)
    ("board", "threads", "4", "an integer"),
    ("board", "threads", True, "an integer"),
    ("board", "threads", 2.0, "an integer"),
    ("board", "threads", 0, "in [1, 64]"),
    ("board", "memory_budget_mb", -5, ">= 1"),
    ("board", "speed_factor", "fast", "a number"),
    ("board", "speed_factor", 0, "> 0.0"),
    ("board", "emulate_timing", 1, "true or false"),
    ("board", "emulate_timing", "yes", "true or false"),
    ("board", "name", 7, "a non-empty string"),
    ("board", "cpu", "", "a non-empty string"),
    ("board", "threads", DELETE, "an integer"),
    ("board", "speed_factor_source", DELETE, "a non-empty string"),
    ("device", "bits", [8, 3], "drawn from [8, 6, 4, 2]"),
    ("device", "bits", [], "drawn from [8, 6, 4, 2]"),
    ("device", "bits", [8, 8], "distinct"),
    ("device", "bits", 8, "a non-empty list"),
    ("device", "bits", [True], "drawn from [8, 6, 4, 2]"),
    ("device", "bits", ["8"], "drawn from [8, 6, 4, 2]"),
    ("device", "codec", "lz4", "one of 'none', 'zstd', 'auto'"),
    ("device", "privacy", "true", "true or false"),
    ("device", "fps_cap", True, "a number"),
    ("device", "fps_cap", 0, "in (0.0, 1000.0]"),
    ("device", "deadline_ms", -1, "> 0.0"),
    ("device", "target_accuracy", 1.5, "in (0.0, 1.0]"),
    ("device", "accuracy_drop_budget", 2, "in [0.0, 1.0]"),
    ("device", "telemetry_interval_s", 0, "> 0.0"),
    ("device", "device_id", "cam/01", "matching"),
    ("device", "device_id", "cam+", "matching"),
    ("device", "device_id", DELETE, "a non-empty string"),
    ("device", "source", "webcam", "'npz:PATH'"),
    ("device", "source", "npz:", "needs a path"),
    ("device", "source", "synthetic:42", "takes no ':' argument"),
    ("device", "source", 3, "'synthetic'"),
    ("broker", "url", "http://broker:1883", "mqtt://HOST[:PORT]"),
    ("broker", "url", "mqtt://", "mqtt://HOST[:PORT]"),
    ("broker", "url", "mqtt://h:99999", "mqtt://HOST[:PORT]"),
    ("broker", "url", "mqtt://h/path", "no path"),
    ("broker", "url", DELETE, "a non-empty string"),
    ("broker", "qos_act", 3, "in [0, 2]"),
    ("broker", "qos_act", 1.0, "an integer"),
    ("broker", "keepalive_s", 1, "in [5, 65535]"),
    ("broker", "username", 5, "a non-empty string"),
]


@pytest.mark.parametrize(("section", "key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_key_file_and_expectation(tmp_path, section, key, value, expected):
    path = write(tmp_path, mutated(section, key, value))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert key in msg and str(path) in msg, msg
    assert expected in msg, msg
    if value is DELETE:
        assert "missing" in msg


@pytest.mark.parametrize(
    ("targets", "word"),
    [({}, "neither"), ({"target_accuracy": 0.9, "target_escalation_rate": 0.2}, "both")],
)
def test_exactly_one_tau_target(tmp_path, targets, word):
    doc = base_doc()
    doc["device"] = {"device_id": "cam-01", **targets}
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert word in msg and "target_accuracy" in msg and "target_escalation_rate" in msg and str(path) in msg


@pytest.mark.parametrize(
    ("broker", "fragment"),
    [
        ({"url": "mqtts://h", "cert_file": "c.pem"}, "cert_file and key_file"),
        ({"url": "mqtt://h", "username": "u", "ca_file": "ca.pem"}, "use mqtts://"),
        ({"url": "mqtt://h", "password_file": "pw"}, "username is not"),
    ],
)
def test_inconsistent_broker_settings(tmp_path, broker, fragment):
    doc = base_doc()
    doc["broker"] = broker
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path_and_the_shipped_boards(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value) and "pi4" in str(info.value)


def test_invalid_toml_names_file_and_position(tmp_path):
    path = write(tmp_path, "[board]\nname = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(path)


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    doc = base_doc()
    doc["device"]["source"] = "npz:data/frames.npz"
    doc["broker"] = {
        "url": "mqtts://h",
        "username": "cam-01",
        "password_file": "../secrets/pw",
        "ca_file": "/etc/ssl/ca.pem",
        "cert_file": "certs/dev.crt",
        "key_file": "certs/dev.key",
    }
    path = write(tmp_path / "profiles" / "site", doc)
    cfg = load_config(Path("profiles/site/board.toml"))  # a relative path to the file itself
    folder = tmp_path / "profiles" / "site"
    assert cfg.path == folder / "board.toml"
    assert cfg.device.source == SourceSpec(SourceKind.NPZ, folder / "data" / "frames.npz")
    assert str(cfg.device.source) == f"npz:{folder / 'data' / 'frames.npz'}"
    assert cfg.broker.password_file == tmp_path / "profiles" / "secrets" / "pw"  # '..' normalised
    assert cfg.broker.ca_file == Path("/etc/ssl/ca.pem")  # absolute stays
    assert cfg.broker.cert_file == folder / "certs" / "dev.crt"
    assert path.exists()


def test_folder_source_and_read_password(tmp_path):
    doc = base_doc()
    doc["device"]["source"] = "folder:frames"
    doc["broker"] = {"url": "mqtt://h", "username": "cam-01", "password_file": "pw.txt"}
    cfg = load_config(write(tmp_path, doc))
    assert cfg.device.source == SourceSpec(SourceKind.FOLDER, tmp_path / "frames")
    with pytest.raises(ConfigError, match=r"password_file: cannot read .*pw\.txt"):
        cfg.broker.read_password()  # not opened at load time, but a clear error on use
    (tmp_path / "pw.txt").write_text("s3cret\n", encoding="utf-8")
    assert cfg.broker.read_password() == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in json.dumps(cfg.to_dict())


# --------------------------------------------------------------------------- names, env var, overrides


@pytest.mark.parametrize(("typo", "suggestion"), [("pi44", "pi4"), ("zero2", "zero2w"), ("qemu", None)])
def test_unknown_board_name_lists_boards(typo, suggestion):
    with pytest.raises(ConfigError) as info:
        load_board(typo)
    msg = str(info.value)
    assert repr(typo) in msg and all(b in msg for b in SHIPPED_BOARDS)
    if suggestion:
        assert f"did you mean {suggestion!r}" in msg


def test_load_board_accepts_a_path(tmp_path):
    path = write(tmp_path, base_doc(), "custom.toml")
    assert load_board(str(path)).board.name == "test"
    assert load_board(path).path == path


def test_config_dir_env_var(tmp_path, monkeypatch):
    write(tmp_path, base_doc(), "lab-rig.toml")
    monkeypatch.setenv(config_module.CONFIG_DIR_ENV, str(tmp_path))
    assert config_dir() == tmp_path.resolve()
    assert list_boards() == ["lab-rig"]
    assert load_board("lab-rig").device.device_id == "cam-01"
    monkeypatch.setenv(config_module.CONFIG_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SPLITEDGE_CONFIG_DIR"):
        config_dir()


def test_overrides_replace_and_revalidate(tmp_path, monkeypatch):
    cfg = load_board("pi4")
    monkeypatch.chdir(tmp_path)
    new = with_overrides(
        cfg, broker_url="mqtts://127.0.0.1:18830", source="npz:frames.npz", device_id="bench-7"
    )
    assert (new.broker.host, new.broker.port, new.broker.tls) == ("127.0.0.1", 18830, True)
    assert new.device.source == SourceSpec(SourceKind.NPZ, tmp_path / "frames.npz")  # cwd for overrides
    assert new.device.device_id == "bench-7"
    assert new.board == cfg.board and new.device.bits == cfg.device.bits
    assert cfg.broker.url.startswith("mqtts://") and cfg.device.source.kind is SourceKind.CAMERA  # unchanged
    assert with_overrides(cfg) == cfg


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"broker_url": "tcp://x:1"}, "mqtt://HOST[:PORT]"),
        ({"source": "video:1"}, "unknown source kind"),
        ({"device_id": "a#b"}, "device_id"),
    ],
)
def test_bad_overrides(kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        with_overrides(load_board("qemu-aarch64"), **kwargs)


def test_override_to_plain_mqtt_drops_certificates_only():
    # pi4 profile on the dev host against dev-local.conf: the explicit mqtt:// drops the TLS files.
    cfg = with_overrides(load_board("pi4"), broker_url="mqtt://127.0.0.1:1883")
    assert (
        not cfg.broker.tls and (cfg.broker.ca_file, cfg.broker.cert_file, cfg.broker.key_file) == (None,) * 3
    )
    kept = with_overrides(load_board("pi3bplus"), broker_url="mqtt://127.0.0.1:1883").broker
    assert kept.username == "pi3bplus-01" and kept.password_file == Path("/etc/splitedge/broker.password")
    tls = with_overrides(load_board("pi4"), broker_url="mqtts://10.0.0.9").broker
    assert tls.port == 8883 and tls.ca_file == load_board("pi4").broker.ca_file


# --------------------------------------------------------------------------- systemd unit


def test_systemd_unit():
    path = FIRMWARE / "systemd" / "splitedge-device.service"
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(path, encoding="utf-8")
    assert (
        "network-online.target" in unit["Unit"]["After"] and "network-online.target" in unit["Unit"]["Wants"]
    )
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root")
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/splitedge") and exec_start[1] == "device"
    assert "--bundle" in exec_start and "--config" in exec_start
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    text = (FIRMWARE / "systemd" / "splitedge-device.service").read_text(encoding="utf-8")
    # verify checks that the executable exists: point it at one that does, keep everything else.
    text = text.replace("/opt/splitedge/venv/bin/splitedge", shutil.which("true") or "/bin/true")
    unit = write(tmp_path, text, "splitedge-device.service")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30
    )
    problems = [line for line in done.stderr.splitlines() if "splitedge-device.service" in line]
    assert not problems, done.stderr


# --------------------------------------------------------------------------- mosquitto configs

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(conf: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"mosquitto refused {conf.name} (exit {proc.returncode}):\n{err}{out}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"mosquitto did not open port {port} within 10 s")


@pytest.fixture
def brokers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A paho client that queues what it receives (MQTT v5, so SUBACK reason codes are visible)."""

    def __init__(
        self,
        port: int,
        tls: dict[str, str] | None = None,
        user: tuple[str, str] | None = None,
        wait: float = 5.0,
    ) -> None:
        mqtt = pytest.importorskip("paho.mqtt.client")
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.granted: queue.Queue[list[int]] = queue.Queue()
        self.connected: queue.Queue[int] = queue.Queue()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.granted.put([int(rc.value) for rc in codes])
        c.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(int(rc.value))
        if tls:
            c.tls_set(**tls)
        if user:
            c.username_pw_set(*user)
        self.client = c
        #: CONNACK reason code; -1 when the TLS handshake failed or no CONNACK came within `wait` seconds.
        self.rc = -1
        try:
            c.connect("127.0.0.1", port)
        except OSError:  # ssl.SSLError included: the broker refused the handshake
            return
        c.loop_start()
        try:
            self.rc = self.connected.get(timeout=wait)
        except queue.Empty:
            self.close()

    def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return self.granted.get(timeout=5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@needs_mosquitto
@pytest.mark.broker
def test_dev_local_conf_starts_and_routes(tmp_path, brokers):
    port = free_port()
    text = (FIRMWARE / "mosquitto" / "dev-local.conf").read_text(encoding="utf-8")
    assert re.search(r"^set_tcp_nodelay true$", text, re.M) and re.search(
        r"^listener 1883 127\.0\.0\.1$", text, re.M
    )
    conf = write(tmp_path, text.replace("listener 1883 ", f"listener {port} "), "dev-local.conf")
    brokers.append(start_broker(conf, port))
    sub, pub = Client(port), Client(port)
    assert sub.subscribe("splitedge/v1/+/act") == [1]
    pub.publish("splitedge/v1/cam-01/act", b"\x01\x02")
    assert sub.messages.get(timeout=5) == ("splitedge/v1/cam-01/act", b"\x01\x02")
    sub.close()
    pub.close()


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A folder the broker can read after it drops root for the mosquitto user (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="splitedge-test-broker-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def make_pki(folder: Path, client_names: list[str]) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and one client certificate per name."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    files: dict[str, Path] = {}

    def save(name: str, key: Any, cert: Any) -> None:
        files[f"{name}.key"] = folder / f"{name}.key"
        files[f"{name}.crt"] = folder / f"{name}.crt"
        files[f"{name}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        cn: str, issuer_key: Any, issuer_name: Any, ca: bool, san: list[Any] | None = None
    ) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(issuer_key or key, hashes.SHA256())

    ca_key, ca_cert = issue("splitedge-test-ca", None, None, True)
    save("ca", ca_key, ca_cert)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    save("server", *issue("localhost", ca_key, ca_cert.subject, False, san))
    for cn in client_names:
        save(cn, *issue(cn, ca_key, ca_cert.subject, False))
    return files


def cloud_conf(tmp_path: Path, port: int, pki: dict[str, Path], password_file: Path | None = None) -> Path:
    text = (FIRMWARE / "mosquitto" / "cloud-tls.conf").read_text(encoding="utf-8")
    assert re.search(r"^set_tcp_nodelay true$", text, re.M) and re.search(r"^listener 8883$", text, re.M)
    acl = tmp_path / "acl"
    shutil.copy(FIRMWARE / "mosquitto" / "acl", acl)
    subs = {
        "listener 8883": f"listener {port} 127.0.0.1",
        "/etc/mosquitto/splitedge/ca.crt": str(pki["ca.crt"]),
        "/etc/mosquitto/splitedge/server.crt": str(pki["server.crt"]),
        "/etc/mosquitto/splitedge/server.key": str(pki["server.key"]),
        "/etc/mosquitto/splitedge/acl": str(acl),
        "log_dest syslog": "log_dest stderr",
    }
    for old, new in subs.items():
        assert old in text, old
        text = text.replace(old, new)
    if password_file is not None:  # the alternative documented in the file's comments
        text = text.replace("require_certificate true", "require_certificate false")
        text = text.replace("use_identity_as_username true", f"password_file {password_file}")
    # The ACL and password files are read after mosquitto drops root: they must be readable by its user.
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    return write(tmp_path, text, "cloud-tls.conf")


@needs_mosquitto
@pytest.mark.broker
def test_cloud_tls_conf_enforces_certificates_and_acl(broker_dir, brokers):
    tmp_path = broker_dir
    pki = make_pki(tmp_path, ["cam-a", "cam-b", "splitedge-tail", "splitedge-fleet"])
    port = free_port()
    brokers.append(start_broker(cloud_conf(tmp_path, port, pki), port))

    def tls(name: str) -> dict[str, str]:
        return {
            "ca_certs": str(pki["ca.crt"]),
            "certfile": str(pki[f"{name}.crt"]),
            "keyfile": str(pki[f"{name}.key"]),
        }

    tail, cam_a, cam_b = (
        Client(port, tls("splitedge-tail")),
        Client(port, tls("cam-a")),
        Client(port, tls("cam-b")),
    )
    assert (tail.rc, cam_a.rc, cam_b.rc) == (0, 0, 0)
    assert tail.subscribe("$share/tails/splitedge/v1/+/act")[0] < 0x80  # how tail workers subscribe
    assert cam_a.subscribe("splitedge/v1/cam-a/result")[0] < 0x80
    cam_b.subscribe("splitedge/v1/cam-a/result")  # not its own: granted or not, it must receive nothing

    cam_a.publish("splitedge/v1/cam-b/act", b"forged")  # denied: another device's topic
    cam_a.publish("splitedge/v1/cam-a/act", b"mine")
    # Same publisher, QoS 1: had the forged one been routed, it would arrive first.
    assert tail.messages.get(timeout=5) == ("splitedge/v1/cam-a/act", b"mine")
    tail.publish("splitedge/v1/cam-a/result", b"label=3")
    assert cam_a.messages.get(timeout=5) == ("splitedge/v1/cam-a/result", b"label=3")
    cam_a.publish("splitedge/v1/cam-a/telemetry", b"t")  # allowed, and only to telemetry readers
    cam_b.publish("splitedge/v1/cam-b/act", b"b")
    assert tail.messages.get(timeout=5) == ("splitedge/v1/cam-b/act", b"b")
    # A device's own report reaches the fleet monitor; another device's does not get through.
    fleet = Client(port, tls("splitedge-fleet"))
    assert fleet.subscribe("splitedge/v1/+/report")[0] < 0x80
    cam_b.publish("splitedge/v1/cam-a/report", b"forged")
    cam_a.publish("splitedge/v1/cam-a/report", b"r")
    assert fleet.messages.get(timeout=5) == ("splitedge/v1/cam-a/report", b"r")
    assert (
        cam_a.messages.empty() and cam_b.messages.empty() and tail.messages.empty() and fleet.messages.empty()
    )
    fleet.close()

    # A client without a certificate never gets a CONNACK (the handshake or the session is refused).
    no_cert = Client(port, {"ca_certs": str(pki["ca.crt"])}, wait=1.0)
    assert no_cert.rc == -1
    no_cert.close()
    for c in (tail, cam_a, cam_b):
        c.close()


@needs_mosquitto
@pytest.mark.broker
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_cloud_tls_password_alternative(broker_dir, brokers):
    tmp_path = broker_dir
    pki = make_pki(tmp_path, [])
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "cam-a", "right"], check=True, capture_output=True
    )
    port = free_port()
    brokers.append(start_broker(cloud_conf(tmp_path, port, pki, password_file=passwd), port))
    server_only = {"ca_certs": str(pki["ca.crt"])}
    assert Client(port, server_only, ("cam-a", "wrong")).rc != 0
    good = Client(port, server_only, ("cam-a", "right"))
    assert good.rc == 0
    assert good.subscribe("splitedge/v1/cam-a/result")[0] < 0x80
    good.close()


# --------------------------------------------------------------------------- [policy]


def test_policy_table_sets_the_dynamic_cut_options_and_round_trips(tmp_path):
    from sdk.policy_options import PolicyOptions

    doc = base_doc()
    doc["policy"] = {"margin": 0.1, "probe_every": 10, "allowed_cuts": [51, 109], "shadow_probes": False,
                     "bandwidth_ceiling": 2e6}
    cfg = load_config(write(tmp_path, doc))
    assert cfg.policy == PolicyOptions(margin=0.1, probe_every=10, allowed_cuts=(51, 109), shadow_probes=False,
                                       bandwidth_ceiling=2e6)
    assert config_module.parse_config(cfg.to_dict(), cfg.path) == cfg
    assert load_config(write(tmp_path, base_doc(), "plain.toml")).policy == PolicyOptions()  # the table is optional
    assert "policy" not in load_config(write(tmp_path, base_doc(), "plain.toml")).to_dict()


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"probe_evry": 3}, r"unknown key 'probe_evry' in \[policy\].*did you mean 'probe_every'"),
        ({"patience": 0}, r"\[policy\] patience = 0 .*expected an integer >= 1"),
        ({"margin": "0.1"}, r"\[policy\] margin = '0.1' .*expected a number"),
        ({"allowed_cuts": [51, "x"]}, r"\[policy\] allowed_cuts .*expected a non-empty list of cut ids"),
        ({"allowed_cuts": []}, r"\[policy\] allowed_cuts .*expected a non-empty list of cut ids"),
        ({"max_backoff": 8, "explore_backoff": 4}, r"\[policy\] in .*explore_backoff >= max_backoff"),
        ("not a table", r"\[policy\] in .* is not a table; expected keys: margin, patience"),
    ],
)
def test_bad_policy_values_name_key_and_file(tmp_path, table, fragment):
    doc: dict[str, Any] = base_doc()
    doc["policy"] = table
    path = write(tmp_path, doc) if isinstance(table, dict) else write(tmp_path, 'policy = "x"\n' + dump(base_doc()))
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)
