"""The `splitedge` console script: one thin dispatcher over the commands' own `main(argv) -> int`.

Each command lives in the module named after its step and is imported only when it is run, so
`splitedge device` on a Pi never imports TensorFlow and `splitedge plan` needs numpy only.
"""

from __future__ import annotations

import importlib
import os
import sys

from sdk.errors import SplitEdgeError, install_hint

#: command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("converter.convert_cli", "Keras model -> bundle of int8 heads, tails and early exits"),
    "verify": ("converter.verify_cli", "run every cut of a bundle and report agreement with the float model"),
    "sign": ("sdk.sign_cli", "sign a bundle's manifest (Ed25519), or make a key pair for --trust"),
    "plan": ("sdk.plan_cli", "evaluate T(s) over every cut and bit width for a bandwidth; print the argmin"),
    "reference": ("converter.reference_cli", "build (or reuse) the reference model's bundle and print the plan"),
    "broker": ("sdk.broker", "start the embedded MQTT broker (Mosquitto if installed, else amqtt)"),
    "device": ("device_runner.cli", "run the camera side"),
    "cloud": ("cloud_tail.cli", "run a cloud tail worker"),
    "fleet": ("cloud_tail.fleet", "live table of every device's telemetry"),
    "rollout": ("cloud_tail.rollout", "offer a bundle to a device group over MQTT (devices switch, or roll back)"),
    "pki": ("sdk.pki", "make the CA, broker, device and worker certificates for mutual TLS"),
    "demo": ("lab.demo", "the end-to-end demo: broker, cloud tail, devices, a real bandwidth trace"),
    "bench": ("benchmarks.run", "run the benchmarks and write docs/BENCHMARKS.md (from a checkout)"),
}


def usage() -> str:
    lines = ["usage: splitedge COMMAND [options]   (splitedge COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"splitedge: unknown command {name!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter, where a command imports it
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"splitedge {name}: cannot import {exc.name!r} ({exc}). "
            f"Install the extra this command needs, e.g. {install_hint('all')}",
            file=sys.stderr,
        )
        return 2
    try:
        return int(module.main(rest))
    except SplitEdgeError as exc:
        print(f"splitedge {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
