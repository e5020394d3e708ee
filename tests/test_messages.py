"""Result, report, error, telemetry and status messages (sdk/messages.py)."""

from __future__ import annotations

import json

import pytest

from sdk import messages
from sdk.errors import UnsupportedVersionError, WireError
from sdk.messages import (
    AnnounceMessage,
    AnsweredBy,
    ErrorCode,
    ErrorMessage,
    ReportMessage,
    ResultMessage,
    RolloutState,
    StatusMessage,
    TelemetryMessage,
    decode_message,
)

RESULT = ResultMessage(
    seq=41,
    device_id="cam-01",
    cls=3,
    topk=((3, 0.91), (7, 0.05)),
    answered_by="cloud",
    cut_id=2,
    worker_id="w1",
)
REPORT = ReportMessage(
    seq=41,
    device_id="cam-01",
    cut_id=2,
    bytes_received=4660,
    recv_ts=1.7e9,
    queue_ms=0.4,
    tail_ms=3.2,
    worker_id="w1",
)
ERROR = ErrorMessage(
    seq=None, device_id="cam-01", code=ErrorCode.UNKNOWN_CUT, detail="no tail for cut 9", worker_id="w2"
)
TELEMETRY = TelemetryMessage(
    device_id="cam-01", ts=1.7e9, cut=2, fps=14.5, exit_rate=0.62, bytes_per_s=51200.0,
    bandwidth_estimate=None, p50_ms=21.0, p95_ms=48.5, errors=0, queue_depth=1, emulated=True,
)  # fmt: skip
STATUS = StatusMessage(device_id="cam-01", online=False, ts=1.7e9)
TELEMETRY_ROLLOUT = TelemetryMessage(
    device_id="cam-01", ts=1.7e9, cut=2, fps=14.5, exit_rate=0.62, bytes_per_s=51200.0,
    bandwidth_estimate=None, p50_ms=21.0, p95_ms=48.5, errors=0, queue_depth=1, emulated=True,
    bundle_id="1a2b3c4d", bundle_version="2", rollout=RolloutState.ROLLED_BACK, rollout_bundle="99aa00ff",
    rollout_detail="bundle B: manifest.sig does not verify",
)  # fmt: skip
ANNOUNCE = AnnounceMessage(
    group="lobby", bundle_id="1a2b3c4d" + "0" * 56, version="2", manifest_sha256="ab" * 32, signature='{"k": 1}',
    chunk_size=4, files=(("manifest.json", "cd" * 32, 9), ("cut_001/head.tflite", "ef" * 32, 4)), ts=1.7e9,
)  # fmt: skip
ALL = [RESULT, REPORT, ERROR, TELEMETRY, STATUS, TELEMETRY_ROLLOUT]  # every message of one device


def test_public_api_is_pinned():
    assert sorted(messages.__all__) == sorted(
        [
            "MAX_MESSAGE_BYTES", "RESULT_SOURCES", "SCHEMA_VERSION", "AnnounceMessage", "AnsweredBy", "ErrorCode", "ErrorMessage",
            "Message", "ReportMessage", "ResultMessage", "RolloutState", "StatusMessage", "TelemetryMessage",
            "decode_message",
        ]
    )  # fmt: skip


@pytest.mark.parametrize("message", ALL, ids=lambda m: m.TYPE)
def test_round_trip(message):
    data = message.to_bytes()
    assert type(message).from_bytes(data) == message
    assert decode_message(data) == message


def test_result_wire_form_is_the_documented_json():
    # The JSON below is the example of docs/WIRE.md ("Messages"); a contract like the frame bytes.
    expected = (
        '{"type":"result","v":1,"seq":41,"device_id":"cam-01","cls":3,"topk":[[3,0.91],[7,0.05]],'
        '"answered_by":"cloud","cut_id":2,"worker_id":"w1","tail_ms":0.0,"ts":0.0}'
    )
    assert RESULT.to_bytes() == expected.encode()
    assert RESULT.answered_by is AnsweredBy.CLOUD and RESULT.topk == ((3, 0.91), (7, 0.05))


def test_unknown_extra_fields_are_ignored():
    body = json.loads(REPORT.to_bytes()) | {"gpu": "a100", "future": {"nested": [1]}}
    assert ReportMessage.from_bytes(json.dumps(body).encode()) == REPORT


def test_optional_fields_may_be_omitted():
    body = json.loads(RESULT.to_bytes())
    del body["tail_ms"], body["ts"]
    assert ResultMessage.from_bytes(json.dumps(body).encode()) == RESULT


@pytest.mark.parametrize("message", ALL, ids=lambda m: m.TYPE)
def test_missing_required_field_is_named(message):
    body = json.loads(message.to_bytes())
    del body["device_id"]
    with pytest.raises(WireError, match=f"{message.TYPE} message is missing field 'device_id'"):
        type(message).from_bytes(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("seq", "41", "an integer"),
        ("seq", True, "an integer"),
        ("seq", -1, ">= 0"),
        ("cls", 3.0, "an integer"),
        ("topk", [[3, "x"]], "a finite number"),
        ("topk", [[3]], "pair"),
        ("topk", {"3": 0.9}, "list of"),
        ("answered_by", "fog", "one of \\['cloud', 'device'\\]"),
        ("answered_by", "deadline", "one of \\['cloud', 'device'\\]"),  # the runner's fallback, never a result
        ("worker_id", 5, "a string"),
    ],
)
def test_wrong_types_are_named(field, value, expected):
    body = json.loads(RESULT.to_bytes()) | {field: value}
    with pytest.raises(WireError, match=f"field '{field}.*expected .*{expected}"):
        ResultMessage.from_bytes(json.dumps(body).encode())


def test_telemetry_bool_and_optional_checks():
    body = json.loads(TELEMETRY.to_bytes())
    with pytest.raises(WireError, match="'emulated' is 1 .*true or false"):
        TelemetryMessage.from_bytes(json.dumps(body | {"emulated": 1}).encode())
    assert TELEMETRY["fps"] == 14.5 and TELEMETRY["bandwidth_estimate"] is None
    with pytest.raises(KeyError):
        TELEMETRY["nope"]


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_unknown_version(version):
    body = json.loads(STATUS.to_bytes()) | {"v": version}
    with pytest.raises(UnsupportedVersionError, match=f"schema version {version!r}; this reader supports 1"):
        StatusMessage.from_bytes(json.dumps(body).encode())


def test_missing_version_and_wrong_type():
    body = json.loads(STATUS.to_bytes())
    del body["v"]
    with pytest.raises(WireError, match="no schema version field 'v'"):
        decode_message(json.dumps(body).encode())
    with pytest.raises(WireError, match="type is 'status'; expected 'result'"):
        ResultMessage.from_bytes(STATUS.to_bytes())
    with pytest.raises(WireError, match="expected one of"):
        decode_message(b'{"type":"hello","v":1}')


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe", b"[1,2]", b"not json", b'{"type":"status","v":1,"device_id":"a","online":true,"ts":NaN}',
     b"[" * 100_000, b" " * (messages.MAX_MESSAGE_BYTES + 1)],
)  # fmt: skip
def test_garbage_is_a_wire_error(data):
    with pytest.raises(WireError):
        decode_message(data)


def test_non_finite_numbers_are_refused_on_encode():
    with pytest.raises(ValueError, match="non-finite"):
        StatusMessage(device_id="a", online=True, ts=float("nan")).to_bytes()


def test_unknown_error_codes_are_kept():
    body = json.loads(ERROR.to_bytes()) | {"code": "rate_limited"}
    assert ErrorMessage.from_bytes(json.dumps(body).encode()).code == "rate_limited"
    assert ERROR.code == "unknown_cut" and ERROR.seq is None


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        RESULT.cls = 4  # type: ignore[misc]


def test_telemetry_without_the_bundle_fields_still_reads():
    # Devices before the rollout fields: the fields default to None (unknown), nothing is refused.
    body = json.loads(TELEMETRY.to_bytes())
    for key in ("bundle_id", "bundle_version", "rollout", "rollout_bundle", "rollout_detail"):
        body.pop(key)
    got = TelemetryMessage.from_bytes(json.dumps(body).encode())
    assert got.bundle_id is None and got.rollout is None


def test_announce_round_trip_and_missing_field():
    assert decode_message(ANNOUNCE.to_bytes()) == ANNOUNCE
    body = json.loads(ANNOUNCE.to_bytes())
    del body["manifest_sha256"]
    with pytest.raises(WireError, match="announce message is missing field 'manifest_sha256'"):
        AnnounceMessage.from_bytes(json.dumps(body).encode())


def test_announce_counts_chunks_per_file_and_in_all():
    assert ANNOUNCE.wire_bundle_id == 0x1A2B3C4D
    assert [ANNOUNCE.chunk_count(i) for i in range(2)] == [3, 1]  # 9 bytes in chunks of 4: 4 + 4 + 1
    assert ANNOUNCE.total_chunks == 4


def test_announce_files_are_checked_by_field():
    body = json.loads(ANNOUNCE.to_bytes())
    with pytest.raises(WireError, match=r"files\[1\]"):
        AnnounceMessage.from_bytes(json.dumps(body | {"files": [body["files"][0], ["x", "y"]]}).encode())


def test_one_answered_by_vocabulary_for_results_answers_and_summaries():
    from device_runner import answers

    assert answers.AnsweredBy is AnsweredBy  # defined once (sdk.messages), re-exported by the answers module
    assert [a.value for a in AnsweredBy] == ["device", "cloud", "deadline"]
