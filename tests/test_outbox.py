"""Store-and-forward (sdk/outbox.py) on the in-memory transport: outage, order, bound, counters, the spool.

The spool's record layout is a contract: the golden test spells it out byte by byte, built here with
``struct`` independently of the code under test. The real-broker test is tests/test_outbox_mqtt.py.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from cloud_tail.worker import TailWorker, WorkerConfig
from sdk import outbox as outbox_module
from sdk import topics
from sdk.config import OutboxSettings, parse_config, with_overrides
from sdk.errors import BrokerUnavailableError, ConfigError, PayloadTooLargeError, SpoolError
from sdk.messages import ResultMessage, TelemetryMessage, decode_message
from sdk.outbox import (
    KEPT_KINDS,
    Outbox,
    StoreAndForward,
    decode_records,
    encode_cut,
    encode_put,
    keeps_topic,
)
from sdk.topics import TopicKind
from sdk.transport import InMemoryHub, Message
from tests.test_cloud_worker import FakeTails
from tests.test_cloud_worker import frame as act_frame
from tests.test_device_runner import DEVICE, FRAME, make_runner

TELEMETRY = topics.topic("cam-01", TopicKind.TELEMETRY)
RESULT = topics.topic("cam-01", TopicKind.RESULT)
ACT = topics.topic("cam-01", TopicKind.ACT)


def test_public_api_is_pinned() -> None:
    assert sorted(outbox_module.__all__) == sorted([
        "CUT_EVERY", "KEPT_KINDS", "Outbox", "OutboxSettings", "OutboxStats", "Stored", "StoreAndForward",
        "keeps_topic",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "kept"),
    [
        ("splitedge/v1/cam-01/result", True),
        ("splitedge/v1/cam-01/report", True),
        ("splitedge/v1/cam-01/telemetry", True),
        ("splitedge/v1/cam-01/act", False),  # a stale frame is answered locally, never sent late
        ("splitedge/v1/cam-01/status", False),  # retained, republished on connect; the will says offline
        ("demo/check/act", False),  # not a splitedge topic
        ("somewhere/else", False),
    ],
)
def test_what_is_kept_per_message_kind(topic: str, kept: bool) -> None:
    assert keeps_topic(topic) is kept
    assert {TopicKind.RESULT, TopicKind.REPORT, TopicKind.TELEMETRY} == KEPT_KINDS


def watch(hub: InMemoryHub, topic_filter: str = "splitedge/v1/#") -> list[Message]:
    seen: list[Message] = []
    hub.transport("watcher").subscribe(topic_filter, seen.append, qos=1)
    return seen


def test_an_outage_is_bridged_in_order_exactly_once() -> None:
    hub = InMemoryHub()
    seen = watch(hub)
    saf = StoreAndForward(hub.transport("dev"))
    for i in range(3):
        saf.publish(TELEMETRY, b"t%d" % i)
    hub.set_broker_up(False)
    for i in range(3, 8):
        saf.publish(TELEMETRY, b"t%d" % i)  # kept, not raised
    with pytest.raises(BrokerUnavailableError):
        saf.publish(ACT, b"frame")  # frames are not kept: the device answers them locally
    assert [m.payload for m in seen] == [b"t0", b"t1", b"t2"]
    assert len(saf.outbox) == 5
    hub.set_broker_up(True)  # the reconnect callback flushes
    assert [m.payload for m in seen] == [b"t%d" % i for i in range(8)]
    s = saf.outbox.stats()
    assert (s.queued, s.stored, s.forwarded, s.dropped, saf.sent_direct) == (0, 5, 5, 0, 3)


def test_a_message_published_from_an_earlier_reconnect_callback_goes_behind_the_stored_ones() -> None:
    hub = InMemoryHub()
    seen = watch(hub)
    inner = hub.transport("dev")
    saf: StoreAndForward | None = None
    # registered on the inner transport before the outbox's own callback: it runs first, before the flush
    inner.on_connection_change(lambda up: up and saf is not None and saf.publish(TELEMETRY, b"new"))
    saf = StoreAndForward(inner)
    hub.set_broker_up(False)
    saf.publish(TELEMETRY, b"old-1")
    saf.publish(TELEMETRY, b"old-2")
    hub.set_broker_up(True)
    assert [m.payload for m in seen] == [b"old-1", b"old-2", b"new"]


def test_drop_oldest_at_the_message_bound_counted() -> None:
    hub = InMemoryHub()
    seen = watch(hub)
    saf = StoreAndForward(hub.transport("dev"), Outbox(OutboxSettings(max_messages=3)))
    hub.set_broker_up(False)
    for i in range(5):
        saf.publish(RESULT, b"r%d" % i, qos=1)
    s = saf.outbox.stats()
    assert (s.queued, s.stored, s.dropped, s.dropped_bytes) == (3, 5, 2, 2 * (len(RESULT) + 2))
    hub.set_broker_up(True)
    assert [m.payload for m in seen] == [b"r2", b"r3", b"r4"]  # the newest survive
    assert [m.qos for m in seen] == [1, 1, 1]


def test_drop_oldest_at_the_byte_bound_and_a_message_larger_than_the_bound() -> None:
    size = len(TELEMETRY) + 10
    box = Outbox(OutboxSettings(max_bytes=2 * size))
    for i in range(3):
        assert box.put(TELEMETRY, b"%010d" % i)
    assert len(box) == 2 and box.nbytes == 2 * size and box.dropped == 1
    assert not box.put(TELEMETRY, b"x" * (2 * size))  # alone over the bound: dropped, counted
    assert len(box) == 2 and box.dropped == 2


def test_drops_are_logged_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(OutboxSettings(max_messages=1), name="cam-01")
    box.put(TELEMETRY, b"a")
    box.put(TELEMETRY, b"b")
    assert "outbox cam-01: dropped a message" in caplog.text and "1 dropped so far" in caplog.text


def test_max_messages_zero_keeps_nothing_and_raises_as_before() -> None:
    hub = InMemoryHub()
    saf = StoreAndForward(hub.transport("dev"), Outbox(OutboxSettings(max_messages=0)))
    hub.set_broker_up(False)
    with pytest.raises(BrokerUnavailableError):
        saf.publish(TELEMETRY, b"t")


def test_a_stored_message_the_broker_refuses_is_dropped_counted_and_the_rest_go() -> None:
    class Picky:  # a transport whose broker refuses one payload as too large (PayloadTooLargeError)
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def __call__(self, m: outbox_module.Stored) -> None:
            if m.payload == b"huge":
                raise PayloadTooLargeError("too large")
            self.sent.append(m.payload)

    box = Outbox()
    for p in (b"a", b"huge", b"b"):
        box.put(TELEMETRY, p)
    send = Picky()
    assert box.forward(send) == 2
    assert send.sent == [b"a", b"b"] and box.dropped == 1 and box.forwarded == 2


def test_close_without_a_spool_counts_what_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    hub = InMemoryHub()
    saf = StoreAndForward(hub.transport("dev"))
    hub.set_broker_up(False)
    saf.publish(TELEMETRY, b"t")
    saf.close()
    assert saf.outbox.stats().dropped == 1 and "lost at close" in caplog.text


# ------------------------------------------------------------------------------------------ the spool


def test_spool_records_golden_bytes() -> None:
    # The layout is a contract (sdk/outbox.py module doc); expected bytes built by hand, one field a line.
    topic = b"a/b"
    body = (
        struct.pack("<Q", 7)  # seq
        + b"\x01"  # qos
        + b"\x00"  # retain
        + struct.pack("<H", 3)  # topic length
        + topic  # topic, UTF-8
        + b"hi"  # payload
    )
    expected = b"SO" + b"\x01" + struct.pack("<I", len(body)) + struct.pack("<I", zlib.crc32(body)) + body
    assert encode_put(outbox_module.Stored(7, "a/b", b"hi", 1, False)) == expected
    cut = struct.pack("<Q", 7)
    assert encode_cut(7) == b"SO" + b"\x02" + struct.pack("<I", 8) + struct.pack("<I", zlib.crc32(cut)) + cut
    live, last, end = decode_records(expected + encode_cut(7) + encode_put(outbox_module.Stored(8, "c", b"")))
    assert [m.seq for m in live] == [8] and last == 8 and end == len(expected) + 19 + 11 + 12 + 1


def test_the_spool_survives_a_restart_and_is_sent_first(tmp_path: Path) -> None:
    hub = InMemoryHub()
    seen = watch(hub)
    settings = OutboxSettings(spool_dir=tmp_path)
    first = StoreAndForward(hub.transport("dev-1"), Outbox(settings, name="cam-01"))
    first.publish(TELEMETRY, b"sent-before")
    hub.set_broker_up(False)
    for i in range(3):
        first.publish(TELEMETRY, b"kept-%d" % i, qos=1)
    first.kill()  # the process dies; the spool keeps the three
    assert (tmp_path / "cam-01.outbox").stat().st_size > 0
    hub.set_broker_up(True)
    box = Outbox(settings, name="cam-01")  # the next start
    assert len(box) == 3 and box.recovered == 3 and box.corrupt == 0
    second = StoreAndForward(hub.transport("dev-2"), box)  # connected: what it read back goes first
    second.publish(TELEMETRY, b"after")
    assert [m.payload for m in seen] == [b"sent-before", b"kept-0", b"kept-1", b"kept-2", b"after"]
    assert (tmp_path / "cam-01.outbox").stat().st_size == 0  # all sent: the file is emptied
    second.close()
    assert len(Outbox(settings, name="cam-01")) == 0  # nothing is sent twice


def test_a_torn_tail_is_skipped_with_a_counted_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = OutboxSettings(spool_dir=tmp_path)
    box = Outbox(settings, name="w1")
    for i in range(3):
        box.put(RESULT, b"r%d" % i)
    box.close()
    spool = tmp_path / "w1.outbox"
    good = spool.stat().st_size
    with spool.open("ab") as f:
        f.write(encode_put(outbox_module.Stored(4, RESULT, b"r3"))[:-1])  # a crash mid-append
    box = Outbox(settings, name="w1")
    assert [m.payload for m in box._queue] == [b"r0", b"r1", b"r2"]  # noqa: SLF001 - the order, read back
    assert box.corrupt == 1 and box.stats().corrupt == 1 and "torn or corrupt tail" in caplog.text
    assert spool.stat().st_size == good  # truncated at the last good record
    box.close()


def test_a_flipped_byte_drops_the_record_and_everything_after(tmp_path: Path) -> None:
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")
    for i in range(3):
        box.put(RESULT, b"payload-%d" % i)
    box.close()
    spool = tmp_path / "w1.outbox"
    data = bytearray(spool.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's payload: its CRC no longer matches
    spool.write_bytes(bytes(data))
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")
    assert len(box) == 2 and box.corrupt == 1
    box.close()


def test_a_smaller_bound_on_restart_drops_the_oldest_counted(tmp_path: Path) -> None:
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")
    for i in range(5):
        box.put(RESULT, b"r%d" % i)
    box.close()
    box = Outbox(OutboxSettings(spool_dir=tmp_path, max_messages=2), name="w1")
    assert len(box) == 2 and box.dropped == 3 and box.recovered == 5
    box.close()
    assert len(Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")) == 2  # the drop was written down


def test_drops_and_sends_are_written_down_and_the_file_compacted(tmp_path: Path) -> None:
    box = Outbox(OutboxSettings(spool_dir=tmp_path, max_messages=10), name="w1")
    for i in range(1000):  # at the bound: each put drops one (a CUT and a PUT record, one fsync)
        box.put(RESULT, b"%0100d" % i)
    spool = tmp_path / "w1.outbox"
    assert spool.stat().st_size < (1 << 16) + 10 * 130  # rewritten as the dead prefix grew, not 130 kB long
    box.close()
    box = Outbox(OutboxSettings(spool_dir=tmp_path, max_messages=10), name="w1")
    assert [int(m.payload) for m in box._queue] == list(range(990, 1000))  # noqa: SLF001
    box.close()


def test_one_process_per_spool_file(tmp_path: Path) -> None:
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="cam-01")
    with pytest.raises(SpoolError, match=r"cam-01\.outbox is in use by another process"):
        Outbox(OutboxSettings(spool_dir=tmp_path), name="cam-01")
    box.close()
    Outbox(OutboxSettings(spool_dir=tmp_path), name="cam-01").close()  # free again


def test_a_worker_id_that_is_no_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match=r"spool name '\.\./x' .*pick another --worker-id"):
        Outbox(OutboxSettings(spool_dir=tmp_path), name="../x")
    with pytest.raises(ValueError, match="max_messages must be >= 0"):
        Outbox(OutboxSettings(max_messages=-1))


def test_an_unusable_spool_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match=r"outbox spool .*file/sub/cam-01\.outbox: .*spool_dir or --outbox-dir"):
        Outbox(OutboxSettings(spool_dir=tmp_path / "file" / "sub"), name="cam-01")


# ------------------------------------------------------------------------------------------ config

BASE = {
    "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
              "speed_factor_source": "test"},
    "device": {"device_id": "cam-01", "target_accuracy": 0.9},
    "broker": {"url": "mqtt://127.0.0.1:1883"},
}  # fmt: skip


def test_the_outbox_section(tmp_path: Path) -> None:
    cfg = parse_config({**BASE, "outbox": {"max_messages": 50, "max_bytes": 4096, "spool_dir": "spool"}},
                       tmp_path / "p.toml")  # fmt: skip
    assert cfg.outbox == OutboxSettings(50, 4096, tmp_path / "spool")  # relative to the profile's folder
    assert parse_config(cfg.to_dict(), cfg.path) == cfg
    assert parse_config(BASE).outbox == OutboxSettings()  # the section is optional
    assert "outbox" not in parse_config(BASE).to_dict()
    over = with_overrides(cfg, outbox_dir="elsewhere")
    assert over.outbox.spool_dir == Path.cwd() / "elsewhere" and over.outbox.max_messages == 50


def test_a_wrong_outbox_key_gets_the_precise_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'max_message' in \[outbox\] .*did you mean 'max_messages'"):
        parse_config({**BASE, "outbox": {"max_message": 5}})
    with pytest.raises(ConfigError, match=r"\[outbox\] max_messages = -1 .*expected an integer >= 0"):
        parse_config({**BASE, "outbox": {"max_messages": -1}})
    with pytest.raises(ConfigError, match=r"\[outbox\] max_bytes = 'big' .*expected an integer >= 1"):
        parse_config({**BASE, "outbox": {"max_bytes": "big"}})
    with pytest.raises(ConfigError, match=r"\[outbox\] .* is not a table"):
        parse_config({**BASE, "outbox": 3})


# ------------------------------------------------------------------------------------------ producers


def test_the_device_keeps_its_telemetry_through_an_outage_and_reports_the_outbox() -> None:
    runner, answers, hub, clock = make_runner(confidence=1.0)  # every frame answered on the device
    seen = watch(hub, topics.topic(DEVICE, TopicKind.TELEMETRY))
    hub.set_broker_up(False)
    for _ in range(3):
        runner.process(FRAME)
        clock.advance(1.0)
        runner.maybe_telemetry()
    assert not seen and len(runner.transport.outbox) == 3
    hub.set_broker_up(True)
    got = [decode_message(m.payload) for m in seen]
    assert len(got) == 3 and all(isinstance(t, TelemetryMessage) for t in got)
    assert [t.outbox_queued for t in got] == [0, 1, 2]  # how many waited when each was taken
    assert runner.summary().outbox["forwarded"] == 3 and runner.summary().outbox["dropped"] == 0
    assert len(answers) == 3


def test_the_device_telemetry_says_what_was_dropped() -> None:
    cfg_outbox = OutboxSettings(max_messages=1)
    runner, _, hub, clock = make_runner(confidence=1.0)
    runner.transport.outbox.settings = cfg_outbox  # a 1-message outbox for this device
    seen = watch(hub, topics.topic(DEVICE, TopicKind.TELEMETRY))
    hub.set_broker_up(False)
    for _ in range(3):
        runner.process(FRAME)
        clock.advance(1.0)
        runner.maybe_telemetry()
    hub.set_broker_up(True)
    [last] = [decode_message(m.payload) for m in seen]  # the third; storing it dropped the second
    assert last.outbox_dropped == 1 and last.outbox_queued == 1  # as they were when it was taken
    assert runner.summary().outbox["dropped"] == 2
    summary = json.loads(json.dumps(runner.summary().outbox))
    assert summary["stored"] == 3


def test_the_worker_keeps_its_answers_through_an_outage_in_order() -> None:
    hub = InMemoryHub()
    replies = watch(hub, topics.filter_for(TopicKind.RESULT))
    worker = TailWorker(hub.transport("worker"), FakeTails(), WorkerConfig("w1"))
    worker.start(thread=False)
    device = hub.transport("dev-a")
    for seq in range(4):
        device.publish(topics.topic("a", TopicKind.ACT), act_frame("a", seq), qos=1)
    hub.set_broker_up(False)  # the frames are in the worker's queue; the broker goes away
    worker.drain()
    assert worker.outbox.stats().queued == 8  # a result and a report each
    hub.set_broker_up(True)
    assert [decode_message(m.payload).seq for m in replies] == [0, 1, 2, 3]
    assert all(isinstance(decode_message(m.payload), ResultMessage) for m in replies)
    assert worker.counters.snapshot()["publish_failed"] == 0


# ------------------------------------------------------------------------------------------ the CLIs

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "cam-07"
source = "synthetic"
fps_cap = 50
deadline_ms = 200
target_accuracy = 0.5
bits = [8]
telemetry_interval_s = 0.02

[broker]
url = "mqtt://127.0.0.1:1"

[outbox]
max_messages = 100
"""


def test_the_device_cli_spools_its_telemetry_while_no_broker_is_there(
    reference_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdk import cli

    profile = tmp_path / "cam.toml"
    profile.write_text(PROFILE)
    spool = tmp_path / "spool"
    code = cli.main(["device", "--bundle", str(reference_bundle), "--config", str(profile), "--frames", "10",
                     "--outbox-dir", str(spool), "--out", str(tmp_path / "answers.jsonl")])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["summary"]
    assert summary["outbox"]["stored"] >= 2 and summary["outbox"]["dropped"] == 0, summary
    box = Outbox(OutboxSettings(spool_dir=spool), name="cam-07")  # what the next start sends first
    assert len(box) >= summary["outbox"]["queued"] >= 1 and box.recovered == len(box)
    assert all(isinstance(decode_message(m.payload), TelemetryMessage) for m in box._queue)  # noqa: SLF001
    box.close()


def test_the_cloud_cli_names_an_unusable_spool_in_one_line(
    reference_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdk import cli

    (tmp_path / "file").write_text("x")
    code = cli.main(["cloud", "--bundle", str(reference_bundle), "--broker", "mqtt://127.0.0.1:1",
                     "--worker-id", "w9", "--outbox-dir", str(tmp_path / "file" / "sub")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "outbox spool" in err and "w9.outbox" in err and "--outbox-dir" in err


def test_an_older_record_after_the_newest_is_debris(tmp_path: Path) -> None:
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")
    for i in range(3):
        box.put(RESULT, b"r%d" % i)
    box.close()
    with (tmp_path / "w1.outbox").open("ab") as f:
        f.write(encode_put(outbox_module.Stored(2, RESULT, b"stale")))  # seq 2 again
    box = Outbox(OutboxSettings(spool_dir=tmp_path), name="w1")
    assert [m.payload for m in box._queue] == [b"r0", b"r1", b"r2"] and box.corrupt == 1  # noqa: SLF001
    box.close()


CHILD = """
import sys
from pathlib import Path
from sdk.config import OutboxSettings
from sdk.outbox import Outbox
box = Outbox(OutboxSettings(spool_dir=Path(sys.argv[1]), max_messages=100000, max_bytes=10**8), name="cam-01")
i = 0
while True:
    box.put("splitedge/v1/cam-01/telemetry", b"%08d" % i + b"x" * 200)
    print(i, flush=True)
    i += 1
"""


def test_a_process_killed_mid_stream_loses_nothing_it_stored(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert child.stdout is not None
    done = -1
    for line in child.stdout:
        done = int(line)
        if done >= 200:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    box = Outbox(OutboxSettings(spool_dir=tmp_path, max_messages=100000, max_bytes=10**8), name="cam-01")
    got = [int(m.payload[:8]) for m in box._queue]  # noqa: SLF001 - what the next start would send
    assert got == list(range(len(got))) and len(got) > done  # every put that returned is there, in order
    box.close()
