"""Signed bundles: ``splitedge sign`` and ``--trust`` on verify, device and cloud (sdk/signing.py).

Nothing here converts: the session's reference bundle is copied to ``tmp_path`` and signed there.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from sdk import cli  # noqa: E402
from sdk.errors import BundleSignatureError, ConfigError  # noqa: E402
from sdk.manifest import MANIFEST_NAME, load_manifest, sha256_file  # noqa: E402
from sdk.signing import SIGNATURE_NAME, fingerprint, load_public_key, new_key_pair  # noqa: E402


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    return new_key_pair(tmp_path / "keys" / "release.pem")


@pytest.fixture
def signed(reference_bundle: Path, tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(reference_bundle, out)
    (out / SIGNATURE_NAME).unlink(missing_ok=True)
    assert cli.main(["sign", str(out), "--sign-key", str(keys[0])]) == 0
    return out


def test_new_key_writes_a_private_key_0600_and_its_public_key_and_never_overwrites(tmp_path: Path):
    assert cli.main(["sign", "--new-key", str(tmp_path / "k.pem")]) == 0
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert fingerprint(load_public_key(tmp_path / "k.pub.pem")).startswith("SHA256:")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        new_key_pair(tmp_path / "k.pem")


def test_a_signed_bundle_loads_with_trust_in_device_and_cloud(signed: Path, keys: tuple[Path, Path]):
    pytest.importorskip("ai_edge_litert")
    from cloud_tail.tails import TailSet
    from device_runner.heads import LiteRTHeads
    from sdk.config import BoardSpec

    sig = json.loads((signed / SIGNATURE_NAME).read_text())
    assert sig["algorithm"] == "ed25519" and sig["key"] == fingerprint(load_public_key(keys[1]))
    manifest = load_manifest(signed, trust=keys[1])  # what splitedge device does
    LiteRTHeads(signed, manifest, BoardSpec("t", "host", 1, 256, 1.0, "test", emulate_timing=True))
    tails = TailSet(signed, trust=keys[1])  # what splitedge cloud does
    assert tails.bundle_id == manifest.wire_bundle_id
    assert load_manifest(signed).bundle_id == manifest.bundle_id  # without --trust: unchanged


def _verify(bundle: Path, trust: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["verify", str(bundle), "--data", str(bundle / "none.npz"), "--trust", str(trust)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return code, err


def test_a_head_rewritten_with_its_hash_updated_is_refused_by_name(signed, keys, capsys):
    manifest_path = signed / MANIFEST_NAME
    doc = json.loads(manifest_path.read_text())
    ref = next(f for f in doc["files"] if f["path"].endswith("head.tflite"))
    head = signed / ref["path"]
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    ref["sha256"] = sha256_file(head)  # the hash check alone now passes
    for cut in doc["cuts"]:
        for role in ("head", "tail", "exit"):
            if cut.get(role) and cut[role]["path"] == ref["path"]:
                cut[role]["sha256"] = ref["sha256"]
    manifest_path.write_text(json.dumps(doc, indent=1) + "\n")
    load_manifest(signed)  # unsigned loading cannot tell
    with pytest.raises(BundleSignatureError, match="modified after signing"):
        load_manifest(signed, trust=keys[1])
    code, err = _verify(signed, keys[1], capsys)
    assert code == 1 and SIGNATURE_NAME in err and fingerprint(load_public_key(keys[1])) in err


def test_an_unsigned_bundle_is_refused_naming_the_signature_file_and_key(signed, keys, capsys):
    pytest.importorskip("ai_edge_litert")
    from cloud_tail.tails import TailSet

    (signed / SIGNATURE_NAME).unlink()
    code, err = _verify(signed, keys[1], capsys)
    assert code == 1 and f"no {SIGNATURE_NAME}" in err and str(keys[1]) in err and "splitedge sign" in err
    with pytest.raises(BundleSignatureError, match=SIGNATURE_NAME):
        TailSet(signed, trust=keys[1])


def test_a_bundle_signed_by_another_key_is_refused_naming_both_keys(signed, keys, tmp_path, capsys):
    _, other_pub = new_key_pair(tmp_path / "other.pem")
    code, err = _verify(signed, other_pub, capsys)
    signer = fingerprint(load_public_key(keys[1]))
    assert code == 1 and signer in err and fingerprint(load_public_key(other_pub)) in err


def test_a_malformed_signature_or_trust_file_is_one_line(signed, keys, tmp_path, capsys):
    (signed / SIGNATURE_NAME).write_text("not json")
    code, err = _verify(signed, keys[1], capsys)
    assert code == 1 and "is not a splitedge signature" in err
    code, err = _verify(signed, tmp_path / "missing.pub.pem", capsys)
    assert code == 1 and "missing.pub.pem does not exist" in err
    code, err = _verify(signed, keys[0], capsys)  # the private key passed as the trusted one
    assert code == 1 and "not a PEM public key" in err


def test_the_device_refuses_by_the_profiles_trust_key_before_loading_heads(signed, keys, tmp_path, capsys):
    from sdk.config import load_config

    profile = tmp_path / "cam.toml"
    profile.write_text(
        '[board]\nname = "t"\ncpu = "test"\nthreads = 1\nmemory_budget_mb = 256\nspeed_factor = 1.0\n'
        'speed_factor_source = "test"\n'
        '[device]\ndevice_id = "cam-01"\ntarget_accuracy = 0.9\ntrust = "keys/release.pub.pem"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n', encoding="utf-8")
    assert load_config(profile).device.trust == keys[1]  # resolved against the profile's folder
    (signed / SIGNATURE_NAME).unlink()
    code = cli.main(["device", "--bundle", str(signed), "--config", str(profile), "--frames", "1"])
    err = capsys.readouterr().err
    assert code == 1 and f"no {SIGNATURE_NAME}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("which", ["missing", "not ed25519"])
def test_convert_refuses_a_bad_sign_key_before_converting(which, tmp_path, tls_certs, capsys):
    model = Path(__file__).resolve().parents[1] / "converter" / "assets" / "reference.keras"
    calib = tmp_path / "calib.npz"
    calib.write_bytes(b"")
    key = tmp_path / "missing.pem" if which == "missing" else tls_certs.client_key  # an EC P-256 key
    out = tmp_path / "out"
    code = cli.main(["convert", str(model), "--calib", str(calib), "--out", str(out), "--sign-key", str(key)])
    err = capsys.readouterr().err
    assert code == 1 and str(key) in err and "--sign-key" in err and "Traceback" not in err, err
    assert not out.exists()
