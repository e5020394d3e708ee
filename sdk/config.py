"""Load a board profile: `firmware_configs/<board>.toml` -> a frozen `DeviceConfig`.

A profile has three sections, ``[board]`` (the hardware), ``[device]`` (what the camera runs) and
``[broker]`` (where it sends). Every key is documented in ``firmware_configs/README.md``.

Rules (the same for every section):

* **Unknown keys and sections are rejected** with a `ConfigError` that names the key, the section
  and the file, lists the allowed keys and suggests the closest one ("did you mean ...?"). A typo
  never silently falls back to a default.
* A wrong type, a value out of range or a missing required key is a `ConfigError` naming the key,
  the file, what was received and what was expected. ``true``/``false`` are never numbers.
* Relative paths inside a file (``npz:``/``folder:`` sources, broker credential files) resolve
  against the folder of that file; relative paths given as overrides resolve against the cwd.
* Credential files are *not* opened at load time (a profile loads on a laptop without the Pi's
  certificates); `BrokerSettings.read_password` reads the password when it is needed.

Where the shipped profiles live: ``$SPLITEDGE_CONFIG_DIR`` if set, else ``firmware_configs/`` next to
the ``sdk`` package (a checkout or an editable install), else ``<prefix>/share/splitedge/firmware_configs``
(a wheel install; ``sdk.datafiles``).

``emulate_timing = true`` is honoured only off the real board: on a Raspberry Pi the parsed
``BoardSpec.emulate_timing`` is False and head times are measured (``sdk.hardware``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sdk.config_section import REQUIRED, Section, did_you_mean, resolve_path
from sdk.datafiles import shipped_dirs
from sdk.errors import ConfigError
from sdk.families import ModelFamily
from sdk.hardware import emulate_timing
from sdk.policy_options import POLICY_KEYS, PolicyOptions

__all__ = [
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

CONFIG_DIR_ENV = "SPLITEDGE_CONFIG_DIR"
#: Bit widths the wire format can carry for an activation.
ALLOWED_BITS: tuple[int, ...] = (8, 6, 4, 2)
#: A subset of what sdk.topics accepts, also safe as a certificate CN and a broker user name.
_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class CodecChoice(StrEnum):
    """How the device compresses the packed activation before it is published."""

    NONE = "none"
    ZSTD = "zstd"
    AUTO = "auto"  # zstd when it saves bytes on this payload, else none


class SourceKind(StrEnum):
    """Where the device's frames come from (the part of ``source`` before the colon)."""

    SYNTHETIC = "synthetic"  # seeded random frames, no files needed
    NPZ = "npz"  # npz:PATH, an array of frames
    FOLDER = "folder"  # folder:PATH, image files in name order
    CAMERA = "camera"  # the board's camera


class TauTarget(StrEnum):
    """Which quantity the early-exit threshold tau is chosen to meet (the TOML key's name)."""

    ACCURACY = "target_accuracy"
    ESCALATION_RATE = "target_escalation_rate"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed ``source`` value; ``path`` is absolute for npz/folder and None otherwise."""

    kind: SourceKind
    path: Path | None = None

    def __str__(self) -> str:
        return self.kind.value if self.path is None else f"{self.kind.value}:{self.path}"


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """The hardware: how many LiteRT threads, how much memory the head may use, how fast it is.

    ``speed_factor`` is defined on MobileNetV2 224 int8; ``speed_factor_by_family`` (optional, the
    ``[board.speed_factor_by_family]`` table) holds the factors of other workload families, as
    ``(family, factor)`` pairs in `ModelFamily` order; `factor_for` picks one."""

    name: str
    cpu: str
    threads: int
    memory_budget_mb: int
    speed_factor: float
    speed_factor_source: str
    description: str = ""
    emulate_timing: bool = False
    speed_factor_by_family: tuple[tuple[ModelFamily, float], ...] = ()
    speed_factor_by_family_source: str = ""

    def factor_for(self, family: ModelFamily | str | None = None) -> float:
        """Board ms per reference-core ms for a network of ``family`` (`sdk.families.model_family` of the
        manifest's model name): its entry in ``speed_factor_by_family``, else the table's ``default``, else
        ``speed_factor``. ``mobilenet`` and None (a cost that is no network, e.g. JPEG encoding) are
        ``speed_factor`` itself."""
        if family is None:
            return self.speed_factor
        try:
            fam = ModelFamily(family)
        except ValueError:
            raise ValueError(f"family must be one of {', '.join(f.value for f in ModelFamily)} or None, "
                             f"got {family!r} (sdk.families.model_family maps a model name to one)") from None
        if fam is ModelFamily.MOBILENET:
            return self.speed_factor
        table = dict(self.speed_factor_by_family)
        return table.get(fam, table.get(ModelFamily.DEFAULT, self.speed_factor))

    def emulated_ms(self, measured_ms: float, family: ModelFamily | str | None = None) -> float:
        """Head time this board would take, from one measured on this host (1 thread): x the board's factor
        for ``family`` (`factor_for`) x this host's speed relative to the reference core (``sdk.host_speed``,
        measured once per process)."""
        if not self.emulate_timing:
            return measured_ms
        from sdk.host_speed import board_factor  # measures the host on first use; imports LiteRT lazily

        return measured_ms * board_factor(self, family)


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """What the camera runs: identity, frames, deadline, tau target, bit widths, codec, privacy."""

    device_id: str
    source: SourceSpec
    fps_cap: float
    deadline_ms: float
    bits: tuple[int, ...]
    codec: CodecChoice
    privacy: bool
    accuracy_drop_budget: float
    telemetry_interval_s: float
    target_accuracy: float | None = None
    target_escalation_rate: float | None = None
    #: answer locally once the cloud's answer is overdue: later than overdue_factor x its expected time
    #: (link + transfer + tail, from the live estimates) + overdue_slack_ms, if that comes before the
    #: deadline; 0 turns it off (docs/DEVICE.md, "Exactly one answer per frame")
    overdue_factor: float = 2.0
    overdue_slack_ms: float = 30.0
    #: Ed25519 public key (PEM): only a bundle signed by it is run (``--trust`` overrides; sdk/signing.py)
    trust: Path | None = None
    #: send the raw frame (cut 0) as a JPEG of this quality (1..95) instead of its uncompressed pixels; None:
    #: uncompressed (``codec`` applies). The planner prices cut 0 at the size of the JPEGs the device encodes.
    raw_jpeg_quality: int | None = None

    @property
    def tau_target(self) -> tuple[TauTarget, float]:
        """The one tau target that is set, as (which, value)."""
        if self.target_accuracy is not None:
            return TauTarget.ACCURACY, self.target_accuracy
        assert self.target_escalation_rate is not None  # guaranteed by the loader
        return TauTarget.ESCALATION_RATE, self.target_escalation_rate


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the device publishes. Paths are absolute; None means "not used"."""

    url: str
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    qos_act: int = 1

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def read_password(self) -> str | None:
        """The password (first line of `password_file`), or None when no file is configured."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"[broker] password_file: cannot read {self.password_file} ({exc.strerror}); expected a "
                "readable file whose first line is the broker password. Create it (chmod 600) or remove the key."
            ) from exc
        return text.splitlines()[0] if text else ""


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Store-and-forward (sdk/outbox.py): results, reports and telemetry kept while the broker is away.

    At most ``max_messages`` messages and ``max_bytes`` bytes (topic + payload) wait; beyond, the oldest is
    dropped and counted. ``max_messages = 0`` keeps nothing. ``spool_dir``: also keep them on disk there
    (one ``<id>.outbox`` file per device or worker), so they survive a restart."""

    max_messages: int = 1000
    max_bytes: int = 1_000_000
    spool_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One board profile, fully validated. `path` is the file it came from (None if built in code)."""

    board: BoardSpec
    device: DeviceSettings
    broker: BrokerSettings
    path: Path | None = None
    outbox: OutboxSettings = OutboxSettings()  # the optional [outbox] section
    policy: PolicyOptions = PolicyOptions()  # the optional [policy] section (sdk/policy_options.py)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The TOML-shaped dict (paths as absolute strings); `parse_config` reads it back unchanged."""
        out: dict[str, dict[str, Any]] = {}
        sections = [("board", self.board), ("device", self.device), ("broker", self.broker)]
        if self.outbox != OutboxSettings():
            sections.append(("outbox", self.outbox))
        if self.policy != PolicyOptions():
            sections.append(("policy", self.policy))
        for section, value in sections:
            table: dict[str, Any] = {}
            for field in dataclasses.fields(value):
                item = getattr(value, field.name)
                if item is None or (item in ("", ()) and field.default == item):  # absent in the file
                    continue
                if field.name == "speed_factor_by_family":
                    item = {family.value: factor for family, factor in item}
                elif isinstance(item, StrEnum):
                    item = item.value
                elif isinstance(item, Path | SourceSpec):
                    item = str(item)
                elif isinstance(item, tuple):
                    item = list(item)
                table[field.name] = item
            out[section] = table
        return out


# --------------------------------------------------------------------------- the three sections

_BOARD_KEYS = tuple(f.name for f in dataclasses.fields(BoardSpec))
_DEVICE_KEYS = tuple(f.name for f in dataclasses.fields(DeviceSettings))
_BROKER_KEYS = tuple(f.name for f in dataclasses.fields(BrokerSettings))
_OUTBOX_KEYS = tuple(f.name for f in dataclasses.fields(OutboxSettings))
_SECTIONS = ("board", "device", "broker", "outbox", "policy")


_FAMILY_KEYS = tuple(f.value for f in ModelFamily)


def _parse_families(s: Section, speed_factor: float) -> tuple[tuple[ModelFamily, float], ...]:
    """``[board.speed_factor_by_family]``: family = factor (> 0); unknown families rejected by name."""
    table = s.table.get("speed_factor_by_family")
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise s.fail("speed_factor_by_family", table, "a table [board.speed_factor_by_family] of family = factor, "
                     f"families from {', '.join(_FAMILY_KEYS)}")
    sub = Section("board.speed_factor_by_family", table, s.file, _FAMILY_KEYS)
    factors = {f: sub.number(f.value, None, low=0.0, low_open=True) for f in ModelFamily}
    mobilenet = factors[ModelFamily.MOBILENET]
    if mobilenet is not None and mobilenet != speed_factor:
        raise sub.fail("mobilenet", mobilenet, f"the same as speed_factor ({speed_factor:g}): speed_factor is defined "
                       "on MobileNetV2, so change speed_factor or remove this key")
    return tuple((f, v) for f, v in factors.items() if v is not None)


def _parse_board(s: Section) -> BoardSpec:
    speed_factor = s.number("speed_factor", REQUIRED, low=0.0, low_open=True)
    families = _parse_families(s, speed_factor)
    source = s.string("speed_factor_by_family_source", "") or ""
    if families and not source:
        raise ConfigError(
            f"[board] speed_factor_by_family is set but speed_factor_by_family_source is not, in {s._where()}: "
            "expected a string saying where the per-family factors come from (measured or assumed, with the figures)."
        )
    name = s.string("name", REQUIRED)
    return BoardSpec(
        name=name,
        description=s.string("description", "") or "",
        cpu=s.string("cpu", REQUIRED),
        threads=s.integer("threads", REQUIRED, low=1, high=64),
        memory_budget_mb=s.integer("memory_budget_mb", REQUIRED, low=1),
        speed_factor=speed_factor,
        speed_factor_source=s.string("speed_factor_source", REQUIRED),
        # The one place the profile's request meets the machine: never emulated on a real Pi (sdk.hardware).
        emulate_timing=emulate_timing(name, s.boolean("emulate_timing", False)),
        speed_factor_by_family=families,
        speed_factor_by_family_source=source,
    )


def parse_source(value: object, base_file: Path | None = None, *, key: str = "source") -> SourceSpec:
    """``synthetic`` | ``camera`` | ``npz:PATH`` | ``folder:PATH`` -> `SourceSpec` (PATH made absolute)."""
    expected = "one of 'synthetic', 'camera', 'npz:PATH', 'folder:PATH'"
    where = str(base_file) if base_file is not None else "an override"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[device] {key} = {value!r} in {where}: expected {expected}.")
    kind_text, sep, rest = value.partition(":")
    try:
        kind = SourceKind(kind_text)
    except ValueError:
        hint = did_you_mean(kind_text, [k.value for k in SourceKind])
        raise ConfigError(
            f"[device] {key} = {value!r} in {where}: unknown source kind{hint}; expected {expected}."
        ) from None
    if kind in (SourceKind.NPZ, SourceKind.FOLDER):
        if not rest:
            raise ConfigError(
                f"[device] {key} = {value!r} in {where}: {kind.value} needs a path, e.g. '{kind.value}:frames'."
            )
        return SourceSpec(kind, resolve_path(rest, base_file))
    if sep:
        raise ConfigError(
            f"[device] {key} = {value!r} in {where}: {kind.value} takes no ':' argument; expected {expected}."
        )
    return SourceSpec(kind)


def _parse_device(s: Section) -> DeviceSettings:
    accuracy = s.number("target_accuracy", None, low=0.0, high=1.0, low_open=True)
    escalation = s.number("target_escalation_rate", None, low=0.0, high=1.0)
    if (accuracy is None) == (escalation is None):
        both = accuracy is not None
        raise ConfigError(
            f"[device] in {s._where()}: {'both' if both else 'neither'} of target_accuracy and "
            "target_escalation_rate set; expected exactly one (the quantity tau is chosen to meet). "
            f"{'Remove one' if both else 'Add one, e.g. target_accuracy = 0.97'}."
        )
    bits_value = s._get("bits", [8], "a non-empty list drawn from [8, 6, 4, 2]")
    if (
        not isinstance(bits_value, list)
        or not bits_value
        or any(isinstance(b, bool) or b not in ALLOWED_BITS for b in bits_value)
        or len(set(bits_value)) != len(bits_value)
    ):
        raise s.fail("bits", bits_value, "a non-empty list of distinct bit widths drawn from [8, 6, 4, 2]")
    codec_value = s.string("codec", CodecChoice.AUTO.value)
    try:
        codec = CodecChoice(codec_value)
    except ValueError:
        raise s.fail(
            "codec", codec_value, "one of " + ", ".join(repr(c.value) for c in CodecChoice)
        ) from None
    return DeviceSettings(
        device_id=s.string("device_id", REQUIRED, pattern=_DEVICE_ID),
        source=parse_source(s._get("source", "synthetic", ""), s.file),
        fps_cap=s.number("fps_cap", 10.0, low=0.0, high=1000.0, low_open=True),
        deadline_ms=s.number("deadline_ms", 100.0, low=0.0, low_open=True),
        bits=tuple(sorted(bits_value, reverse=True)),
        codec=codec,
        privacy=s.boolean("privacy", False),
        accuracy_drop_budget=s.number("accuracy_drop_budget", 0.01, low=0.0, high=1.0),
        telemetry_interval_s=s.number("telemetry_interval_s", 5.0, low=0.0, low_open=True),
        target_accuracy=accuracy,
        target_escalation_rate=escalation,
        overdue_factor=s.number("overdue_factor", 2.0, low=0.0, high=1000.0),
        overdue_slack_ms=s.number("overdue_slack_ms", 30.0, low=0.0),
        trust=s.path("trust"),
        raw_jpeg_quality=_jpeg_quality(s),
    )


def _jpeg_quality(s: Section) -> int | None:
    value = s._get("raw_jpeg_quality", None, "an integer JPEG quality in [1, 95]")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 95:
        raise s.fail("raw_jpeg_quality", value, "an integer JPEG quality in [1, 95] (85 is a common choice), or "
                     "leave it out to send the raw frame uncompressed")
    return value


def _check_url(url: str, where: str) -> str:
    expected = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"[broker] url = {url!r} in {where}: {exc}; expected {expected}.") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"[broker] url = {url!r} in {where}: expected {expected} (no path).")
    if port == 0:
        raise ConfigError(f"[broker] url = {url!r} in {where}: port 0; expected a port in [1, 65535].")
    return url


def _parse_broker(s: Section) -> BrokerSettings:
    settings = BrokerSettings(
        url=_check_url(s.string("url", REQUIRED), s._where()),
        username=s.string("username", None),
        password_file=s.path("password_file"),
        ca_file=s.path("ca_file"),
        cert_file=s.path("cert_file"),
        key_file=s.path("key_file"),
        keepalive_s=s.integer("keepalive_s", 30, low=5, high=65535),
        qos_act=s.integer("qos_act", 1, low=0, high=2),
    )
    _check_broker(settings, s._where())
    return settings


def _parse_outbox(s: Section) -> OutboxSettings:
    return OutboxSettings(
        max_messages=s.integer("max_messages", 1000, low=0),
        max_bytes=s.integer("max_bytes", 1_000_000, low=1),
        spool_dir=s.path("spool_dir"),
    )


def _parse_policy(s: Section) -> PolicyOptions:
    d = PolicyOptions()
    cuts = s._get("allowed_cuts", None, "a non-empty list of cut ids")
    if cuts is not None and (not isinstance(cuts, list) or not cuts
                             or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cuts)):
        raise s.fail("allowed_cuts", cuts, "a non-empty list of cut ids (integers >= 0, see splitedge plan)")
    values = dict(
        margin=s.number("margin", d.margin, low=0.0), patience=s.integer("patience", d.patience, low=1),
        probe_every=s.integer("probe_every", d.probe_every, low=0),
        max_payload_bytes=s.integer("max_payload_bytes", d.max_payload_bytes, low=0),
        tau_override=s.number("tau_override", d.tau_override, low=0.0), allowed_cuts=cuts,
        expected_cost=s.boolean("expected_cost", d.expected_cost),
        plausible_factor=s.number("plausible_factor", d.plausible_factor, low=0.0, low_open=True),
        bandwidth_ceiling=s.number("bandwidth_ceiling", d.bandwidth_ceiling, low=0.0, low_open=True),
        max_backoff=s.integer("max_backoff", d.max_backoff, low=1),
        explore_backoff=s.integer("explore_backoff", d.explore_backoff, low=1),
        max_probe_interval_s=s.number("max_probe_interval_s", d.max_probe_interval_s, low=0.0, low_open=True),
        risk=s.boolean("risk", d.risk), shadow_probes=s.boolean("shadow_probes", d.shadow_probes),
        plan_quantile=s.number("plan_quantile", d.plan_quantile, low=0.0, low_open=True),
    )  # fmt: skip
    try:
        return PolicyOptions(**values)
    except ValueError as exc:  # a combination (explore_backoff < max_backoff)
        raise ConfigError(f"[policy] in {s._where()}: {exc}. Fix the values in that file.") from None


def _check_broker(b: BrokerSettings, where: str) -> None:
    if (b.cert_file is None) != (b.key_file is None):
        raise ConfigError(
            f"[broker] in {where}: cert_file and key_file must be given together (client certificate "
            f"and its key); got cert_file={b.cert_file}, key_file={b.key_file}."
        )
    if b.password_file is not None and b.username is None:
        raise ConfigError(
            f'[broker] in {where}: password_file is set but username is not; add username = "...".'
        )
    if not b.tls and (b.ca_file or b.cert_file):
        raise ConfigError(
            f"[broker] in {where}: ca_file/cert_file are set but url {b.url!r} is plain mqtt://; "
            "use mqtts:// for TLS or remove the certificate keys."
        )


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> DeviceConfig:
    """Validate an already-parsed TOML document; `path` is used for messages and relative paths."""
    file = None if path is None else Path(path).resolve()
    where = str(file) if file is not None else "<in-memory config>"
    for name in data:
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{name}] in {where}{did_you_mean(name, _SECTIONS)}; "
                f"allowed sections: {', '.join(f'[{s}]' for s in _SECTIONS)}. Fix or remove it."
            )
    tables = {}
    for name, keys in (("board", _BOARD_KEYS), ("device", _DEVICE_KEYS), ("broker", _BROKER_KEYS)):
        table = data.get(name)
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"section [{name}] is {'missing' if table is None else 'not a table'} in {where}; "
                f"expected a [{name}] table with keys: {', '.join(keys)}."
            )
        tables[name] = Section(name, table, file, keys)
    outbox = data.get("outbox", {})
    if not isinstance(outbox, Mapping):
        raise ConfigError(f"[outbox] in {where} is not a table; expected keys: {', '.join(_OUTBOX_KEYS)}.")
    policy = data.get("policy", {})
    if not isinstance(policy, Mapping):
        raise ConfigError(f"[policy] in {where} is not a table; expected keys: {', '.join(POLICY_KEYS)}.")
    return DeviceConfig(
        board=_parse_board(tables["board"]),
        device=_parse_device(tables["device"]),
        broker=_parse_broker(tables["broker"]),
        path=file,
        outbox=_parse_outbox(Section("outbox", outbox, file, _OUTBOX_KEYS)),
        policy=_parse_policy(Section("policy", policy, file, POLICY_KEYS)),
    )


# --------------------------------------------------------------------------- files and names


def load_config(path: str | os.PathLike[str]) -> DeviceConfig:
    """Read and validate one profile file."""
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} does not exist; expected a board profile TOML. "
            f"Shipped boards: {', '.join(list_boards()) or 'none found'} (use load_board(NAME))."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {file}: {exc.strerror}; expected a readable TOML file."
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML ({exc}); fix the syntax at that position.") from exc
    return parse_config(data, file)


def config_dir() -> Path:
    """The folder holding the shipped ``<board>.toml`` profiles (see the module docstring for the order)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"{CONFIG_DIR_ENV}={override!r} is not a folder; expected the folder holding <board>.toml "
                f"profiles. Fix or unset {CONFIG_DIR_ENV}."
            )
        return folder.resolve()
    candidates = shipped_dirs()
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ConfigError(
        "cannot find the shipped firmware_configs folder; looked in "
        f"{', '.join(map(str, candidates))}. Set {CONFIG_DIR_ENV} to the folder holding <board>.toml files."
    )


def list_boards() -> list[str]:
    """Names of the shipped profiles (``pi4`` for ``pi4.toml``), sorted."""
    try:
        folder = config_dir()
    except ConfigError:
        return []
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_board(name_or_path: str | os.PathLike[str]) -> DeviceConfig:
    """A shipped profile by name (``"pi4"``), or any profile by path (anything with a / or ending .toml)."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text or Path(text).is_file():
        return load_config(text)
    boards = list_boards()
    file = config_dir() / f"{text}.toml"
    if not file.is_file():
        raise ConfigError(
            f"unknown board {text!r}{did_you_mean(text, boards)}; expected one of {', '.join(boards) or '(none)'} "
            f"(from {config_dir()}) or a path to a .toml profile."
        )
    return load_config(file)


def with_overrides(
    cfg: DeviceConfig,
    *,
    broker_url: str | None = None,
    source: str | None = None,
    device_id: str | None = None,
    outbox_dir: str | os.PathLike[str] | None = None,
) -> DeviceConfig:
    """A copy with command-line overrides applied and re-validated (relative paths: against the cwd).

    A `broker_url` override with a plain ``mqtt://`` scheme drops ca_file/cert_file/key_file (an explicit
    request for a non-TLS broker, e.g. running a Pi profile with emulated timing against dev-local.conf);
    username and password_file are kept.
    """
    broker, device = cfg.broker, cfg.device
    if broker_url is not None:
        broker = dataclasses.replace(broker, url=_check_url(broker_url, "an override"))
        if not broker.tls:  # an explicit plain mqtt:// (e.g. a local dev broker): certificates do not apply
            broker = dataclasses.replace(broker, ca_file=None, cert_file=None, key_file=None)
        _check_broker(broker, "an override")
    if source is not None:
        device = dataclasses.replace(device, source=parse_source(source, None))
    if device_id is not None:
        if not _DEVICE_ID.fullmatch(device_id):
            raise ConfigError(
                f"[device] device_id = {device_id!r} in an override: expected 1-64 characters from "
                "A-Z a-z 0-9 . _ - (it becomes an MQTT topic level)."
            )
        device = dataclasses.replace(device, device_id=device_id)
    outbox = cfg.outbox
    if outbox_dir is not None:
        outbox = dataclasses.replace(outbox, spool_dir=resolve_path(os.fspath(outbox_dir), None))
    return dataclasses.replace(cfg, broker=broker, device=device, outbox=outbox)
