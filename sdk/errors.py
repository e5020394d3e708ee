"""Every error splitedge raises on bad input, in one place.

Misuse of the API (a wrong argument type, an impossible parameter) stays ``ValueError`` /
``TypeError``. Everything that comes from *outside* the program (a file, a payload, a broker, a
config) raises one of these, and the message always says what was received, what was expected,
and what to do about it.

    SplitEdgeError                     base of everything below
    ├── ConfigError                    a board/broker TOML: unknown key, wrong type, missing file
    │   ├── TraceError                 a bandwidth trace file that is not a trace (also a ValueError)
    │   ├── CredentialFileError        a CA/certificate/key/password file missing, unreadable or unusable (names file + flag/key)
    │   ├── ListenError                --metrics-port / --web-port cannot be bound (names address, port and flag)
    │   └── SpoolError                 the outbox spool folder cannot be used, or another process holds its file (names it)
    ├── MissingDependencyError         an optional extra is not installed (names the extra)
    ├── ConversionError                a Keras model the converter cannot split (names the layer)
    ├── BundleError                    a bundle that cannot be used
    │   ├── ManifestError              manifest.json malformed, wrong schema version, bad field
    │   ├── IntegrityError             a file missing, truncated or tampered (names file + sha256)
    │   └── BundleSignatureError       --trust: manifest.sig missing, malformed or not by the trusted key (names both)
    ├── WireError                      a frame or message that cannot be decoded
    │   ├── TruncatedError             fewer bytes than the header/tensors announce
    │   ├── BadMagicError              not a splitedge frame
    │   ├── UnsupportedVersionError    a format version this reader does not know
    │   ├── ChecksumError              CRC32 over a payload does not match
    │   ├── ShapeMismatchError         shape/bit width/payload length disagree, or absurd sizes
    │   ├── UnknownCodecError          a codec id this reader does not know
    │   ├── CorruptPayloadError        bytes that pass the framing but not their encoding (UTF-8, zstd, names)
    │   └── MalformedMessageError      a result/report/error/telemetry/status message that is not well formed
    └── TransportError                 the MQTT side
        ├── BrokerUnavailableError     cannot connect / connection lost (names host:port)
        │   └── BrokerAuthError        TLS or authentication refused: wrong CA, expired/refused certificate, bad password; not retried
        └── PayloadTooLargeError       larger than the broker accepts and cannot be chunked

    ConversionWarning (UserWarning)    the converter will do something the user may not mean (names the flag)
"""

from __future__ import annotations

__all__ = [
    "BadMagicError",
    "BrokerAuthError",
    "BrokerUnavailableError",
    "BundleSignatureError",
    "BundleError",
    "ChecksumError",
    "ConfigError",
    "ConversionError",
    "ConversionWarning",
    "CorruptPayloadError",
    "CredentialFileError",
    "IntegrityError",
    "ListenError",
    "MalformedMessageError",
    "ManifestError",
    "MissingDependencyError",
    "PayloadTooLargeError",
    "ShapeMismatchError",
    "SpoolError",
    "SplitEdgeError",
    "TraceError",
    "TransportError",
    "TruncatedError",
    "UnknownCodecError",
    "UnsupportedVersionError",
    "WireError",
    "install_hint",
]


class SplitEdgeError(Exception):
    """Base of every error splitedge raises on bad input from outside the program."""


class ConfigError(SplitEdgeError):
    """A configuration file or value is wrong: names the file, the key and what was expected."""


class TraceError(ConfigError, ValueError):
    """A bandwidth trace that cannot be read: names the file, the format expected and where traces are."""


class CredentialFileError(ConfigError):
    """A broker CA, certificate, key or password file is missing, unreadable or unusable: names it and its flag/key."""


class ListenError(ConfigError):
    """An HTTP port (--metrics-port, --web-port) cannot be bound: names the address, the port and the flag."""


class SpoolError(ConfigError):
    """The outbox spool ([outbox] spool_dir, --outbox-dir) cannot be created or written, or another process holds it."""


class MissingDependencyError(SplitEdgeError, ImportError):
    """An optional dependency is missing; the message names the pip extra that brings it."""

    @classmethod
    def for_extra(cls, module: str, extra: str) -> MissingDependencyError:
        return cls(f"{module} is not installed, and this step needs it. Install {install_hint(extra)}")


def install_hint(extra: str) -> str:
    """How to install an extra: splitedge is not on PyPI, so from a checkout or a wheel built from one."""
    return (f"the splitedge[{extra}] extra: pip install -e '.[{extra}]' in a checkout, or pip install 'splitedge-VERSION-py3-none-any.whl[{extra}]' "
            "(build it with python -m build --wheel; firmware_configs/README.md, 'Install on a Raspberry Pi')")


class ConversionError(SplitEdgeError):
    """The converter cannot split or export this model: names the layer and what is supported."""


class ConversionWarning(UserWarning):
    """The conversion goes on, but probably not as meant (e.g. a float model fed 0..255): names the flag to pass."""


class BundleError(SplitEdgeError):
    """A bundle folder cannot be used."""


class ManifestError(BundleError):
    """manifest.json is malformed or of a schema version this code does not read."""


class IntegrityError(BundleError):
    """A bundle file is missing, truncated or tampered: names the file and the expected sha256."""


class BundleSignatureError(BundleError):
    """A bundle is unsigned, or manifest.sig is malformed or not by the trusted key: names the file and the key."""


class WireError(SplitEdgeError):
    """A frame or message off the wire cannot be decoded."""


class TruncatedError(WireError):
    """Fewer bytes than the header or the tensor descriptors announce."""


class BadMagicError(WireError):
    """The first bytes are not a splitedge magic number."""


class UnsupportedVersionError(WireError):
    """The format version is newer (or older) than this reader supports."""


class ChecksumError(WireError):
    """The CRC32 over a payload does not match the one in the header."""


class ShapeMismatchError(WireError):
    """Shape, bit width and payload length disagree, or a size is beyond the sane limits."""


class UnknownCodecError(WireError):
    """The codec id in a tensor descriptor is not one this reader knows."""


class CorruptPayloadError(WireError):
    """The framing is intact but a field's encoding is not: invalid UTF-8, a corrupt zstd stream, duplicate names."""


class MalformedMessageError(WireError):
    """A JSON message (result, report, error, telemetry, status) is missing a field or has a wrong type."""


class TransportError(SplitEdgeError):
    """The MQTT transport failed."""


class BrokerUnavailableError(TransportError):
    """The broker cannot be reached or went away."""


class BrokerAuthError(BrokerUnavailableError):
    """The TLS handshake or the broker refused this client (which side and why in the message); retrying cannot help."""


class PayloadTooLargeError(TransportError):
    """A payload is larger than the broker's maximum packet size and cannot be sent."""
