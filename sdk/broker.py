"""``splitedge broker`` and the broker the tests and the demo run: Mosquitto, else amqtt.

:class:`EmbeddedBroker` starts a private broker on a free loopback port with its own config in a
temporary folder, waits until it accepts connections, and can be stopped, killed and restarted on
the same port (tests use that to pull the broker out from under a running client).

* **Mosquitto** (preferred; ``apt-get install mosquitto``): ``listener PORT 127.0.0.1``,
  ``allow_anonymous``, ``persistence false``, ``log_dest stderr`` (captured in ``broker.log``),
  ``set_tcp_nodelay true``; optionally ``max_packet_size``, a TLS listener and a password file.
  Run as root, Mosquitto drops to the ``mosquitto`` user after reading its config and cannot read
  a password file in a private temp folder, so the folder is handed to that user.
* **The shipped cloud broker** (``config="cloud-tls"``): ``firmware_configs/mosquitto/cloud-tls.conf``
  itself, with only its ``listener 8883`` moved to a free loopback port, its ``/etc/mosquitto/splitedge``
  files (CA, server certificate and key, the ACL ``firmware_configs/mosquitto/acl``) replaced by copies
  in the broker's folder and ``log_dest syslog`` by ``stderr`` (plus ``log_type information``): mutual TLS, certificate CN as user name,
  the shipped ACL. It has no plain listener, so :attr:`EmbeddedBroker.url` is its ``mqtts://`` URL.
* **amqtt** (pure Python, ``pip install amqtt``): the fallback when Mosquitto is not installed.
  It speaks MQTT 3.1.1 only (no shared subscriptions: every worker gets every frame) and is
  several times slower; TLS, passwords and ``max_packet_size`` are Mosquitto-only here.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdk.datafiles import shipped_path
from sdk.errors import BrokerUnavailableError, ConfigError, MissingDependencyError
from sdk.signals import stop_on_signals

__all__ = ["BrokerTls", "EmbeddedBroker", "find_mosquitto", "free_port", "main", "parse_args"]

Impl = Literal["auto", "mosquitto", "amqtt"]
Config = Literal["embedded", "cloud-tls"]
_MOSQUITTO_HINT = "install it with `apt-get install mosquitto` (Debian/Raspberry Pi OS) or `brew install mosquitto`"


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary (also looked for in the sbin folders, off a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Files for a TLS listener; ``require_certificate`` makes clients present a cert signed by ``ca``."""

    ca: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    #: The ACL of ``config="cloud-tls"`` (default: the shipped ``mosquitto/acl``); unused otherwise.
    acl: Path | None = None


class EmbeddedBroker:
    """A private MQTT broker in a subprocess. Use as a context manager, or ``start()`` / ``close()``."""

    def __init__(
        self,
        *,
        impl: Impl = "auto",
        port: int | None = None,
        host: str = "127.0.0.1",
        max_packet_size: int | None = None,
        tls: BrokerTls | None = None,
        tls_port: int | None = None,
        password_file: Path | str | None = None,
        config: Config = "embedded",
        startup_timeout: float = 10.0,
    ) -> None:
        if impl not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"impl must be 'auto', 'mosquitto' or 'amqtt', got {impl!r}")
        if config not in ("embedded", "cloud-tls"):
            raise ValueError(f"config must be 'embedded' or 'cloud-tls', got {config!r}")
        if config == "cloud-tls" and (tls is None or password_file is not None or max_packet_size is not None):
            raise ValueError("config='cloud-tls' needs tls=BrokerTls(...) and takes no password_file/max_packet_size")
        self.config: Config = config
        if max_packet_size is not None and max_packet_size < 20:
            raise ValueError(f"max_packet_size must be >= 20 bytes, got {max_packet_size}")
        self.host = host
        self.port = port or free_port(host)
        self.max_packet_size = max_packet_size
        self.tls = tls
        self.tls_port = (tls_port or free_port(host)) if tls is not None else None
        if config == "cloud-tls":  # its one listener is the TLS one
            self.port = self.tls_port or 0
        self.password_file = Path(password_file) if password_file is not None else None
        self.startup_timeout = startup_timeout
        self.impl: Literal["mosquitto", "amqtt"] = self._resolve(impl)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ choosing
    def _resolve(self, impl: Impl) -> Literal["mosquitto", "amqtt"]:
        needs_mosquitto = [
            name for name, value in (("TLS", self.tls), ("password_file", self.password_file),
                                     ("max_packet_size", self.max_packet_size)) if value is not None
        ]
        if impl in ("auto", "mosquitto") and find_mosquitto():
            return "mosquitto"
        if impl == "mosquitto" or needs_mosquitto:
            why = f" ({', '.join(needs_mosquitto)} need it)" if needs_mosquitto else ""
            raise MissingDependencyError(f"mosquitto is not installed{why}; {_MOSQUITTO_HINT}")
        if not amqtt_available():
            raise MissingDependencyError(
                "no MQTT broker available: mosquitto is not installed and neither is amqtt; "
                f"{_MOSQUITTO_HINT}, or pip install 'splitedge[demo]' for the pure-Python amqtt"
            )
        if impl == "auto":
            print("splitedge broker: mosquitto not found, using the pure-Python amqtt broker "
                  "(MQTT 3.1.1 only: no shared subscriptions; slower)", file=sys.stderr)
        return "amqtt"

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """``mqtt://host:port``; with ``config="cloud-tls"`` (no plain listener) the ``mqtts://`` URL."""
        return f"{'mqtts' if self.config == 'cloud-tls' else 'mqtt'}://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return f"mqtts://{self.host}:{self.tls_port}" if self.tls_port is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def log_text(self) -> str:
        """What the broker wrote to stderr so far (useful in a failing test's message)."""
        if self._dir is None or not (self._dir / "broker.log").exists():
            return ""
        return (self._dir / "broker.log").read_text(errors="replace")

    # ------------------------------------------------------------------ config files
    def _write_config(self) -> list[str]:
        assert self._dir is not None
        if self.impl == "amqtt":
            conf = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            path = self._dir / "amqtt.yaml"
            path.write_text(json.dumps(conf))  # JSON is YAML
            return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(path)]
        if self.config == "cloud-tls":
            return self._write_shipped_config()
        lines = [
            "# written by splitedge.sdk.broker.EmbeddedBroker",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "set_tcp_nodelay true",
        ]
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {self.max_packet_size}")
        if self.password_file is not None:
            pw = self._dir / "passwords"
            shutil.copyfile(self.password_file, pw)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        lines.append(f"listener {self.port} {self.host}")
        if self.tls is not None:
            # Copied next to the config so that the unprivileged broker can read them.
            ca, cert, key = (self._dir / "ca.pem", self._dir / "server.pem", self._dir / "server.key")
            for src, dst in ((self.tls.ca, ca), (self.tls.certfile, cert), (self.tls.keyfile, key)):
                shutil.copyfile(src, dst)
                dst.chmod(0o600)
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {ca}",
                f"certfile {cert}",
                f"keyfile {key}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        path = self._dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:  # a global option: goes before the listeners
            lines.insert(1, self._drop_privileges_to())
            path.write_text("\n".join(lines) + "\n")
        return [str(find_mosquitto()), "-c", str(path)]

    def _write_shipped_config(self) -> list[str]:
        """``cloud-tls.conf`` as shipped, only its listener port and ``/etc`` paths moved into our folder."""
        assert self._dir is not None and self.tls is not None
        shipped = shipped_path("mosquitto/cloud-tls.conf")
        text = shipped.read_text(encoding="utf-8")
        acl = self.tls.acl or shipped_path("mosquitto/acl")
        files = {"ca.crt": self.tls.ca, "server.crt": self.tls.certfile, "server.key": self.tls.keyfile, "acl": acl}
        subs = {
            "listener 8883": f"listener {self.tls_port} {self.host}",
            "log_dest syslog": "log_dest stderr",
            # "mosquitto ... running" (start()'s sign that the certificates are loaded) is an information line
            "log_type notice": "log_type notice\nlog_type information",
        }
        for name, src in files.items():
            dst = self._dir / name
            shutil.copyfile(src, dst)
            dst.chmod(0o600 if name.endswith(".key") else 0o644)
            subs[f"/etc/mosquitto/splitedge/{name}"] = str(dst)
        for old, new in subs.items():
            if not re.search(rf"^[^#\n]*{re.escape(old)}", text, re.M):
                raise ConfigError(f"{shipped} has no line with {old!r}; EmbeddedBroker(config='cloud-tls') adapts it")
            text = text.replace(old, new)
        lines = ["# firmware_configs/mosquitto/cloud-tls.conf, adapted by splitedge.sdk.broker.EmbeddedBroker",
                 *text.splitlines()]  # fmt: skip
        if os.geteuid() == 0:  # the ACL is read after the drop: hand our folder to the mosquitto user
            lines.insert(1, self._drop_privileges_to())
        path = self._dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return [str(find_mosquitto()), "-c", str(path)]

    def _drop_privileges_to(self) -> str:
        """As root, Mosquitto switches to ``mosquitto`` before reading the password file: let it read ours."""
        assert self._dir is not None
        try:
            user = pwd.getpwnam("mosquitto")
        except KeyError:
            return "user root"  # no such user to drop to: stay root (a loopback test broker)
        for path in [self._dir, *self._dir.iterdir()]:
            os.chown(path, user.pw_uid, user.pw_gid)
        return "user mosquitto"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it accepts TCP connections; ``BrokerUnavailableError`` if not."""
        if self.running:
            return self
        ports = list(dict.fromkeys([self.port] + ([self.tls_port] if self.tls_port is not None else [])))
        busy = [p for p in ports if _accepts(self.host, p)]
        if busy:  # else "accepts connections" below would be someone else answering
            raise BrokerUnavailableError(
                f"cannot start {self.impl} on {self.host}:{busy[0]}: something already listens there; "
                "leave port=None to get a free port, or stop the other broker"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="splitedge-broker-"))
            _LIVE.add(self)
        try:
            cmd = self._write_config()
        except BaseException:
            self.close()
            raise
        log_start = len(self.log_text())  # restart() appends to the same log
        with open(self._dir / "broker.log", "ab") as log_file:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        deadline = time.monotonic() + self.startup_timeout

        def ready() -> bool:
            if not all(_accepts(self.host, p) for p in ports):
                return False
            # Mosquitto opens each listener before loading its certificates: only "running" means all is set.
            return self.impl != "mosquitto" or " running" in self.log_text()[log_start:]

        while not ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                message = (
                    f"{self.impl} did not start listening on {self.host}:{', '.join(map(str, ports))} "
                    f"(exit code {self._proc.returncode}); its log:\n{self.log_text()[-2000:]}"
                )
                self.close()  # the log is in the message; leave no folder behind
                raise BrokerUnavailableError(message)
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); the port can be reused by restart()."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes at once, as in a crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same port(s); clients reconnect to the same URL."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temporary folder."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _LIVE.discard(self)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.impl}, {self.url}, {'running' if self.running else 'stopped'})"


#: Brokers with a folder (and maybe a process): closed at interpreter exit, so a crashed test run
#: leaves no Mosquitto behind.
_LIVE: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge broker", description="Run a local MQTT broker in the foreground.")
    p.add_argument("--port", type=int, default=1883, help="TCP port (default 1883; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--impl", choices=["auto", "mosquitto", "amqtt"], default="auto",
                   help="auto: Mosquitto if installed, else amqtt")
    p.add_argument("--max-packet-size", type=int, default=None, help="Mosquitto max_packet_size (bytes)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.port != 0 and not 0 < args.port < 65536:
        print(f"splitedge broker: --port {args.port} is not a TCP port (1..65535, or 0)", file=sys.stderr)
        return 2
    if args.port and _accepts(args.host, args.port):
        print(f"splitedge broker: {args.host}:{args.port} is already in use (another broker?); "
              "pick another with --port N, or --port 0", file=sys.stderr)
        return 1
    # Ctrl-C and SIGTERM only set an event, wherever they land: the broker is always stopped cleanly.
    with stop_on_signals() as stop, EmbeddedBroker(impl=args.impl, port=args.port or None, host=args.host,
                                                   max_packet_size=args.max_packet_size) as broker:
        print(f"{broker.impl} listening on {broker.url}  (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.1):
            if not broker.running:
                if stop.wait(0.3):  # a terminal's Ctrl-C reaches the broker (same process group) too
                    break
                print(f"splitedge broker: {broker.impl} exited; its log:\n{broker.log_text()[-2000:]}",
                      file=sys.stderr)
                return 1
    print("broker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
