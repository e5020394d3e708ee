"""Defaults that `splitedge demo` and `splitedge bench dynamic` share, defined once.

* :data:`DEFAULT_BOARD`: the board profile an emulated camera uses when none is named.
* :data:`CELLULAR_RTT_MS`: the fixed round trip a transfer pays beyond bytes / bandwidth on a cellular
  uplink (THEORY.md, "Round trip"). Both commands charge it once per offloaded frame, on the uplink: the
  answer's way back is not delayed again.
* :data:`BENCH_RTTS_MS`: the round trips the docs/BENCHMARKS.md dynamic tables are replayed at.
* :data:`DEFAULT_TRACE`: the real uplink trace both replay when none is named (``sdk.traces.pick_trace``).
"""

from __future__ import annotations

__all__ = ["BENCH_RTTS_MS", "CELLULAR_RTT_MS", "DEFAULT_BOARD", "DEFAULT_TRACE"]

#: The board profile (firmware_configs/<name>.toml) of `splitedge demo` and `splitedge bench dynamic`: the
#: Zero 2 W camera whose raw frame may leave it as a JPEG, where the default workload (ResNet-50 at 224 px,
#: ~200 ms on the board) is slow enough for the cloud to answer first over an LTE round trip (docs/DYNAMIC.md).
DEFAULT_BOARD = "zero2w-offload"

CELLULAR_RTT_MS = 50.0
"""Round trip of a good LTE uplink to a cloud region, in ms: 50.

Sources (as published, not re-measured here): Opensignal's latency metric is the round trip of a request
from the phone to a server and its response ("Tracking AT&T's rise to dominance in 4G network
responsiveness", Opensignal, Aug 2018); its US Mobile Network Experience report (data Sept 16 - Dec 14,
2018, as reported by Inside Towers) has the best operator, AT&T - the carrier of the default demo trace
ATT-LTE-driving-2016 - "with average response times below 60 milliseconds" on 3G and 4G. 3GPP TR 25.913
(E-UTRA requirements) targets under 5 ms one way for the radio user plane alone, unloaded; scheduling
requests and grants on the uplink, the core network and the way to the cloud region add the rest.
Typical LTE round trips are 40-60 ms, 20 ms near the operator's core or on a good 5G link, 100 ms and
more on a loaded cell or 3G: the benchmark tables show 20, 50 and 100 ms (:data:`BENCH_RTTS_MS`).
"""

#: The round trips (ms) of the docs/BENCHMARKS.md dynamic tables: near core / typical LTE / loaded cell or 3G.
BENCH_RTTS_MS: tuple[float, ...] = (20.0, CELLULAR_RTT_MS, 100.0)

#: The shared trace (file name under ../shared/traces) both commands replay without ``--trace``: an LTE uplink
#: recorded while driving (mahimahi's ATT-LTE-driving-2016), whose dips and outages give the cut something to follow.
DEFAULT_TRACE = "ATT-LTE-driving-2016.up"
