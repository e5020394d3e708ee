"""Cheap bundle versions for the rollout tests: a copy of the reference bundle, re-identified and re-signed.

Converting a second model takes minutes; a rollout only needs a bundle with *another identity*. The
copy gets a ``VERSION`` file listed (and hashed) in ``files``, so its ``bundle_id`` - the converter's
sha256 over every ``path:sha256;`` of ``files`` (converter/convert.py) - differs from the original's,
and ``extra["version"]``; then it is signed again. Its models are the reference bundle's, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sdk.manifest import MANIFEST_NAME, sha256_file
from sdk.signing import SIGNATURE_NAME, sign_bundle


def bundle_id_of(files: list[dict]) -> str:
    """The converter's bundle id formula (converter/convert.py), over the manifest's ``files`` entries."""
    return hashlib.sha256("".join(f"{f['path']}:{f['sha256']};" for f in files).encode()).hexdigest()


def make_version(src: Path, dst: Path, version: str, key: Path | None) -> Path:
    """Copy ``src`` to ``dst`` as bundle version ``version`` (a new bundle id), signed with ``key`` if given."""
    shutil.copytree(src, dst)
    (dst / SIGNATURE_NAME).unlink(missing_ok=True)
    (dst / "VERSION").write_text(version + "\n", encoding="utf-8")
    doc = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    doc["files"] = [f for f in doc["files"] if f["path"] != "VERSION"]
    doc["files"].append({"path": "VERSION", "sha256": sha256_file(dst / "VERSION"), "size": len(version) + 1})
    doc["bundle_id"] = bundle_id_of(doc["files"])
    doc.setdefault("extra", {})["version"] = version
    (dst / MANIFEST_NAME).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if key is not None:
        sign_bundle(dst, key)
    return dst


def tamper_head(bundle: Path) -> str:
    """Rewrite one head and update its hash everywhere in manifest.json (the bundle id too), keeping the old
    signature: only ``--trust`` can tell. Returns the head's path."""
    path = bundle / MANIFEST_NAME
    doc = json.loads(path.read_text(encoding="utf-8"))
    ref = next(f for f in doc["files"] if f["path"].endswith("head.tflite"))
    head = bundle / ref["path"]
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    ref["sha256"] = sha256_file(head)
    for cut in doc["cuts"]:
        for role in ("head", "tail", "exit"):
            if cut.get(role) and cut[role]["path"] == ref["path"]:
                cut[role]["sha256"] = ref["sha256"]
    doc["bundle_id"] = bundle_id_of(doc["files"])
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return ref["path"]
