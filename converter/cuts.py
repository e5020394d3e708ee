"""Step 2: candidate cuts: the tensors crossing each layer boundary, and the compressive bottlenecks.

Cut s lies after the s-th node in topological order; s = 0 sends the raw frame, s = n keeps all on
the device. At bit width b a split cut ships ceil(elements * b / 8) bytes per tensor crossing it
(in a DAG a residual branch crosses too). Following Dynamic Split Computing (../shared/THEORY.md),
a cut is kept at b bits when it is a *compressive natural bottleneck*: fewer bytes than the raw frame
and than every earlier boundary at the same b, and at most ``1 - min_reduction`` (default 0.75) of the bytes
of the last cut kept at b (or of the raw frame). Without that margin a network whose boundaries shrink by a
few per cent at a time (NASNetMobile: 14 candidates, ~48 s of export and measurement each) gets a cut at every
step, each barely better than the one before at a little more head time; the planner would seldom choose
between them, and the conversion took 699 s. Boundaries inside the preprocessing (no weights yet) count as
earlier cuts but are not kept: the raw cut sends the frame already. An equal-size cut moves past the BatchNormalization and
activation that TFLite fuses into the op before them. A cut whose tail has no work left (only Flatten/Reshape
after it, e.g. MobileNetV3's logits conv) is not kept: the all-on-device cut runs the same head and sends nothing.
Cuts whose head does not fit the board's memory budget (int8 weights + the peak of live activations while the
head runs) are dropped, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from converter.graph import ModelGraph
from sdk.manifest import CutKind


@dataclass(frozen=True, slots=True)
class Boundary:
    index: int
    name: str
    kind: CutKind
    live: tuple[int, ...]  # tensor ids crossing the cut
    elements: tuple[int, ...]  # per live tensor
    head_flops: int
    tail_flops: int
    head_weight_bytes: int
    head_peak_activation_bytes: int
    compressive_bits: tuple[int, ...] = ()

    def bytes_at(self, bits: int) -> int:
        return sum(math.ceil(e * bits / 8) for e in self.elements)


@dataclass(frozen=True, slots=True)
class CutSelection:
    raw_bytes: int
    boundaries: tuple[Boundary, ...]  # every boundary 0..n
    candidates: tuple[Boundary, ...]  # raw, the kept split cuts, all-on-device
    dropped: tuple[tuple[int, str], ...]  # (index, why) for cuts that were compressive but do not fit


def _elements(graph: ModelGraph, tid: int) -> int:
    return int(math.prod(int(d) for d in graph.tensors[tid].shape[1:]))


def boundaries(graph: ModelGraph, flops: list[int], weights_i8: list[int]) -> list[Boundary]:
    total = sum(flops)
    out: list[Boundary] = []
    peak = 0
    for s in range(graph.n + 1):
        live = graph.live_after(s)
        if s > 0:  # peak while node s runs: what was live before it plus what it writes
            before = set(graph.live_after(s - 1)) | set(graph.nodes[s - 1].outputs)
            peak = max(peak, sum(_elements(graph, t) for t in before))
        kind = CutKind.RAW if s == 0 else CutKind.DEVICE if s == graph.n else CutKind.SPLIT
        out.append(
            Boundary(
                index=s,
                name="raw" if s == 0 else graph.nodes[s - 1].name,
                kind=kind,
                live=live,
                elements=tuple(_elements(graph, t) for t in live),
                head_flops=int(sum(flops[:s])),
                tail_flops=int(total - sum(flops[:s])),
                head_weight_bytes=int(sum(weights_i8[:s])),
                head_peak_activation_bytes=int(peak),
            )
        )
    return out


def select_cuts(
    graph: ModelGraph,
    flops: list[int],
    weights_i8: list[int],
    *,
    bits: tuple[int, ...],
    memory_budget_bytes: int | None,
    min_reduction: float = 0.25,
) -> CutSelection:
    if not 0.0 <= min_reduction < 1.0:
        raise ValueError(f"min_reduction must be in [0, 1), got {min_reduction}")
    bounds = boundaries(graph, flops, weights_i8)
    raw_bytes = bounds[0].elements[0]
    kept: list[Boundary] = []
    dropped: list[tuple[int, str]] = []
    best_so_far = {b: raw_bytes for b in bits}  # the raw frame is the first "earlier cut"
    last_kept = {b: raw_bytes for b in bits}
    for bd in bounds[1:-1]:
        comp = []
        for b in bits:
            nbytes = bd.bytes_at(b)
            if nbytes < best_so_far[b] and nbytes <= (1.0 - min_reduction) * last_kept[b]:
                comp.append(b)
            best_so_far[b] = min(best_so_far[b], nbytes)
        if bd.head_weight_bytes == 0:
            continue  # preprocessing (cast, rescaling): it counts as an earlier cut, the raw cut sends the frame
        if not comp:
            continue
        fits, why = _fits(bd, memory_budget_bytes)
        if not fits:
            dropped.append((bd.index, why))
            continue
        bd = _past_fused(graph, bounds, bd)
        if bd.tail_flops == 0:
            continue  # nothing left for the cloud: the device cut is the same head, without the transfer
        kept.append(_with_bits(bd, tuple(comp)))
        for b in comp:
            last_kept[b] = bd.bytes_at(b)
    device = bounds[-1]
    fits, why = _fits(device, memory_budget_bytes)
    candidates = [bounds[0], *kept]
    if fits:
        candidates.append(device)
    else:
        dropped.append((device.index, why))
    return CutSelection(raw_bytes, tuple(bounds), tuple(candidates), tuple(dropped))


#: Layers TFLite folds into the op before them: a cut just after such a layer costs the same bytes and
#: saves the tail a standalone op, so an equal-size cut moves past them.
FUSED_FOLLOWERS = frozenset({"BatchNormalization", "ReLU", "Activation", "ops.Relu", "ops.Relu6"})


def _past_fused(graph: ModelGraph, bounds: list[Boundary], bd: Boundary) -> Boundary:
    while bd.index + 1 < graph.n:
        nxt = graph.nodes[bd.index]  # the node at position bd.index + 1
        after = bounds[bd.index + 1]
        if nxt.type not in FUSED_FOLLOWERS or nxt.inputs != bd.live or after.elements != bd.elements:
            break
        bd = after
    return bd


def _with_bits(bd: Boundary, comp: tuple[int, ...]) -> Boundary:
    return Boundary(bd.index, bd.name, bd.kind, bd.live, bd.elements, bd.head_flops, bd.tail_flops,
                    bd.head_weight_bytes, bd.head_peak_activation_bytes, comp)


def _fits(bd: Boundary, budget: int | None) -> tuple[bool, str]:
    need = bd.head_weight_bytes + bd.head_peak_activation_bytes
    if budget is None or need <= budget:
        return True, ""
    return False, f"head needs {need} bytes (weights {bd.head_weight_bytes} + peak activations " \
                  f"{bd.head_peak_activation_bytes}) > board budget {budget}"
