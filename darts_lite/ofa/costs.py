"""What a Once-for-All sub-network costs: FLOPs and latency per part, summed over the parts a setting runs.

A sub-network at input side s is the stem, the first block, the active blocks and the head; each part's cost
depends only on its own configuration (channels in and out, stride, kernel size, expand ratio, activation)
and its input side, so a table of parts prices any setting at once, which is what an evolutionary search over
thousands of settings needs.

    flops       millions of multiply-adds (what NAS papers call FLOPs; half of torch's FLOP count, see
                ``darts_lite.measure``) of one forward of the part alone: convolutions and matrix products
                (BatchNorm, activations, pooling and additions are free). Exact: the sum over the parts equals the
                count on the standalone sub-network.
    latency_ms  milliseconds per batch of ``batch`` images (eval mode, no gradient) on this machine:
                ``measure.latency_ms``, the median of 20 timed runs after 5 warm-up runs, per part and input side,
                in a look-up table saved as JSON with its origin
                (this machine, the network's configuration, the batch). A table from another machine or network is
                refused, never reused; parts it lacks are measured and added. The sum over parts leaves out what
                joins them (a few Python calls), so it is a little under a measured whole forward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..measure import count_flops, latency_ms, million_multiply_adds, this_machine
from ..torchfiles import write_text_atomically
from .network import OFANetwork

LATENCY_FILE = "latency_table.json"
LATENCY_VERSION = "dl-ofa-latency-v1"


class CostTableError(ValueError):
    """A latency table that cannot be used for this network on this machine."""


def side_after(side: int, stride: int) -> int:
    """Output side of a k x k convolution with padding k // 2 (k odd) at ``stride`` on a ``side`` input."""
    return (side - 1) // stride + 1


def block_key(block: Any, ks: int, e: float, side: int) -> str:
    """The table key of an elastic block at kernel ``ks``, expand ratio ``e`` and input ``side``."""
    return (f"block|{block.in_channels}>{block.out_channels}|s{block.stride}|k{ks}|e{e:g}|{block.act_name}|{side}")


class SubnetCosts:
    """FLOPs and latency of any (setting, side) of ``net``, from per-part tables filled lazily.

    ``setting`` is {"ks", "e", "d"} as ``OFANetwork.setting()``; ``side`` the input side. ``latency_table``: a
    path to read the latency entries from and write new ones to (None: latency is measured and kept in memory).
    """

    def __init__(self, net: OFANetwork, batch: int = 1, latency_table: str | Path | None = None):
        if batch < 1:
            raise ValueError(f"latency batch={batch}: must be >= 1")
        self.net, self.batch = net, batch
        self.path = Path(latency_table) if latency_table is not None else None
        self.origin = {"version": LATENCY_VERSION, "machine": this_machine(), "network": net.config, "batch": batch}
        self.flops: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.measured_now = 0
        if self.path is not None and self.path.is_file():
            self.latency = read_latency_table(self.path, self.origin)

    # -- the parts a setting runs
    def parts(self, setting: dict[str, Sequence], side: int) -> Iterator[tuple[str, nn.Module, tuple[int, ...]]]:
        """(key, module, input shape [1, C, H, W]) of each part ``setting`` runs at ``side``, in order. The module
        of a block is a standalone block of that configuration (its weights do not matter to a cost)."""
        net = self.net
        cfg = net.config
        yield f"stem|{side}", net.stem, (1, cfg["in_channels"], side, side)
        side = side_after(side, cfg["stem_stride"])
        yield f"first|{side}", net.first, (1, cfg["stem_channels"], side, side)
        blocks = iter(net.blocks)
        i = 0
        for unit, depth in zip(net.units, setting["d"]):
            for j in range(len(unit)):
                block = next(blocks)
                if j < depth:
                    ks, e = setting["ks"][i], setting["e"][i]
                    yield block_key(block, ks, e, side), _Static(block, ks, e), (1, block.in_channels, side, side)
                    side = side_after(side, block.stride)
                i += 1
        yield f"head|{side}", net.head, (1, cfg["widths"][-1], side, side)

    def _value(self, key: str, part: nn.Module | _Static, shape: tuple[int, ...], kind: str) -> float:
        """The table entry of one part (``kind`` "flops" or "latency_ms"), counted or measured on first use."""
        if kind == "flops":
            if key not in self.flops:
                self.flops[key] = million_multiply_adds(count_flops(_module(part), shape[1:]))
            return self.flops[key]
        if key not in self.latency:
            self.latency[key] = latency_ms(_module(part), (self.batch, *shape[1:]), repeats=20, warmup=5)
            self.measured_now += 1
        return self.latency[key]

    def cost(self, setting: dict[str, Sequence], side: int, latency: bool = True) -> dict[str, float]:
        """{"flops": M multiply-adds, "latency_ms": ms (only when ``latency``)} of ``setting`` at ``side``."""
        kinds = ("flops", "latency_ms") if latency else ("flops",)
        total = dict.fromkeys(kinds, 0.0)
        for key, part, shape in self.parts(setting, side):
            for kind in kinds:
                total[kind] += self._value(key, part, shape, kind)
        return total

    def smallest(self, sides: Sequence[int], kind: str) -> float:
        """The least ``kind`` ("flops" or "latency_ms") any setting reaches at any of ``sides``: exact for costs
        that add up over parts (per unit, the cheapest allowed depth of each block's cheapest kernel and width)."""
        net = self.net
        deepest = {"ks": [net.ks_list[0]] * len(net.blocks), "e": [net.expand_list[0]] * len(net.blocks),
                   "d": [net.depth_list[-1]] * len(net.units)}
        best = float("inf")
        for side in sides:
            parts = list(self.parts(deepest, side))  # every block once, at the side it sees (deeper blocks: stride 1)
            total = sum(self._value(key, part, shape, kind) for key, part, shape in parts if not key.startswith("block|"))
            blocks = iter(p for p in parts if p[0].startswith("block|"))
            for unit in net.units:
                prefix, options = 0.0, []
                for j in range(len(unit)):
                    _, part, shape = next(blocks)
                    prefix += min(self._value(block_key(part.block, ks, e, shape[-1]), _Static(part.block, ks, e), shape,
                                              kind) for ks in net.ks_list for e in net.expand_list)
                    if j + 1 in net.depth_list:
                        options.append(prefix)
                total += min(options)
            best = min(best, total)
        return best

    def save(self) -> Path | None:
        """Write the latency entries (with their origin) to the table's path; None without a path."""
        if self.path is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps({"origin": self.origin,
                                                     "entries": dict(sorted(self.latency.items()))}, indent=2) + "\n")
        return self.path


class _Static:
    """A block configuration whose standalone module is built only when a cost needs measuring."""

    def __init__(self, block: Any, ks: int, e: float):
        self.block, self.ks, self.e = block, ks, e

    def build(self) -> nn.Module:
        saved = self.block.active_ks, self.block.active_e
        self.block.active_ks, self.block.active_e = self.ks, self.e
        try:
            return self.block.to_static()
        finally:
            self.block.active_ks, self.block.active_e = saved


def _module(part: nn.Module | _Static) -> nn.Module:
    return part.build() if isinstance(part, _Static) else part


def _describe(origin: dict[str, Any]) -> str:
    m = origin.get("machine") or {}
    return f"{m.get('node')} ({m.get('processor')}, torch {m.get('torch')}, {m.get('threads')} threads)"


def _milliseconds(value: Any) -> bool:
    """Whether ``value`` is a latency a table may hold: a finite number >= 0 (JSON lets a file hold NaN or true)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def read_latency_table(path: str | Path, origin: dict[str, Any]) -> dict[str, float]:
    """The entries of the latency table at ``path`` if it was measured for ``origin`` (this machine, this network,
    this batch); CostTableError saying what differs otherwise."""
    what = f"latency table {path}"
    try:
        data = json.loads(Path(path).read_text())
        saved, entries = data["origin"], data["entries"]
        if not (isinstance(saved, dict) and isinstance(entries, dict)
                and all(_milliseconds(v) for v in entries.values())):
            raise ValueError("origin and entries (key -> milliseconds, a number >= 0) expected")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CostTableError(f"{what}: not a latency table darts_lite wrote ({type(e).__name__}: {e})") from e
    if saved.get("version") != origin["version"]:
        raise CostTableError(f"{what}: version {saved.get('version')!r}, this darts_lite reads {origin['version']!r}")
    if saved.get("machine") != origin["machine"]:
        raise CostTableError(f"{what}: measured on {_describe(saved)}, and this is {_describe(origin)}; latencies do "
                             "not carry over between machines. Point ofa.specialise.latency_table at a table measured "
                             "here, or at a new path (null: the run folder's) to measure one")
    if saved.get("network") != origin["network"]:
        differ = sorted(k for k in set(saved.get("network") or {}) | set(origin["network"])
                        if (saved.get("network") or {}).get(k) != origin["network"].get(k))
        raise CostTableError(f"{what}: measured for another network (differs in {', '.join(differ)}); its entries would "
                             "price other layers. Give a table of this network, or a new path to measure one")
    if saved.get("batch") != origin["batch"]:
        raise CostTableError(f"{what}: measured at batch {saved.get('batch')}, this run asks batch {origin['batch']} "
                             "(ofa.specialise.latency_batch)")
    return {str(k): float(v) for k, v in entries.items()}


@torch.no_grad()
def measured_latency(module: nn.Module, side: int, channels: int, batch: int = 1, repeats: int = 30) -> float:
    """Median milliseconds of a whole forward of ``module`` on [batch, channels, side, side] here (eval mode)."""
    return latency_ms(module, (batch, channels, side, side), repeats=repeats, warmup=5)
