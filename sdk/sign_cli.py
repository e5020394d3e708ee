"""``splitedge sign``: sign an existing bundle without re-converting it, or make an Ed25519 key pair.

    splitedge sign --new-key KEY.pem              writes KEY.pem (0600, keep it off the devices) and KEY.pub.pem
    splitedge sign BUNDLE --sign-key KEY.pem      writes BUNDLE/manifest.sig over manifest.json's exact bytes

Devices and workers then run with ``--trust KEY.pub.pem`` (sdk/signing.py, firmware_configs/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge sign", description=__doc__.split("\n")[0])
    p.add_argument("bundle", nargs="?", type=Path, help="bundle folder to sign (written by splitedge convert)")
    p.add_argument("--sign-key", type=Path, help="Ed25519 private key (PEM) to sign BUNDLE with")
    p.add_argument("--new-key", type=Path, metavar="KEY.pem", help="make a key pair: KEY.pem and KEY.pub.pem")
    args = p.parse_args(argv)
    if args.new_key is None and (args.bundle is None or args.sign_key is None):
        p.error("expected BUNDLE --sign-key KEY.pem, or --new-key KEY.pem")
    return args


def main(argv: list[str] | None = None) -> int:
    from sdk.signing import fingerprint, load_private_key, new_key_pair, sign_bundle

    args = parse_args(argv)
    if args.new_key is not None:
        private, public = new_key_pair(args.new_key)
        print(f"wrote {private} (private, mode 0600: keep it off the devices) and {public} "
              f"({fingerprint(load_private_key(private).public_key())}: install it where devices and workers "
              "find --trust)")
    if args.bundle is not None and args.sign_key is not None:
        key = load_private_key(args.sign_key)
        out = sign_bundle(args.bundle, key)
        print(f"signed {args.bundle}: wrote {out} (key {fingerprint(key.public_key())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
