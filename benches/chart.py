#!/usr/bin/env python3
"""Collects the benchmark numbers and draws BENCHMARKS.svg (standard library only).

    python3 benches/chart.py collect [CRITERION_DIR ...]   # -> benches/results.json
    python3 benches/chart.py table                         # markdown tables, stdout
    python3 benches/chart.py svg                           # -> BENCHMARKS.svg

`collect` reads the criterion medians of `cargo bench --bench peers` from each
CRITERION_DIR (default `target/criterion`; pass a copy per run to keep several
runs), plus `target/bench-results/latency.json` (`cargo bench --bench latency`)
and `target/bench-results/scaling.json` (`benches/scaling.sh`), and writes them
with the machine's description to `benches/results.json`. `table` and `svg`
read only `benches/results.json`, so the committed chart can be redrawn
without rerunning anything.
"""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benches", "results.json")
SVG = os.path.join(ROOT, "BENCHMARKS.svg")

GROUPS = ["throughput_1p", "throughput_2p", "throughput_8p", "throughput_1p_64b", "roundtrip"]
SYSTEMS = [
    "ringbatch",
    "array_queue",
    "crossbeam_channel",
    "disruptor",
    "flume",
    "std_sync_channel",
    "tokio_mpsc",
    "rtrb",
]
COLORS = {
    "ringbatch": "#d62728",
    "ringbatch_busyspin": "#ff9896",
    "array_queue": "#1f77b4",
    "crossbeam_channel": "#2ca02c",
    "disruptor": "#9467bd",
    "flume": "#8c564b",
    "std_sync_channel": "#7f7f7f",
    "tokio_mpsc": "#17becf",
    "rtrb": "#bcbd22",
    "atomic_ping_pong": "#000000",
}


# --------------------------------------------------------------------------
# collect
# --------------------------------------------------------------------------


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def criterion_run(directory):
    """Medians of every peers.rs function found under a criterion directory."""
    groups = {}
    for group in GROUPS:
        for system in SYSTEMS:
            base = os.path.join(directory, group, system, "new")
            if not os.path.exists(os.path.join(base, "estimates.json")):
                continue
            median_ns = read_json(os.path.join(base, "estimates.json"))["median"]["point_estimate"]
            throughput = read_json(os.path.join(base, "benchmark.json")).get("throughput") or {}
            elements = throughput.get("Elements", 1)
            groups.setdefault(group, {})[system] = {
                "median_ns": median_ns,
                "items_per_s": elements * 1e9 / median_ns,
            }
    return groups


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {"nproc": os.cpu_count(), "model": model, "commit": commit}


def collect(dirs):
    dirs = dirs or [os.path.join(ROOT, "target", "criterion")]
    results = {
        "machine": machine(),
        "peers": [
            {"label": os.path.basename(os.path.normpath(d)), "groups": criterion_run(d)} for d in dirs
        ],
    }
    for name in ("latency", "scaling"):
        path = os.path.join(ROOT, "target", "bench-results", name + ".json")
        if os.path.exists(path):
            results[name] = read_json(path)
    with open(RESULTS, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(RESULTS, ROOT))


# --------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------


def fmt_ns(ns):
    if ns < 1e3:
        return "%.0f ns" % ns
    if ns < 1e6:
        return "%.2f µs" % (ns / 1e3)
    return "%.2f ms" % (ns / 1e6)


def axis_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return "%g %s" % (ns / scale, unit)
    return "%g ns" % ns


def table(results):
    runs = results["peers"]
    for i, entry in enumerate(runs):
        run = entry["groups"]
        print("### peers.rs, run %d (%s)\n" % (i + 1, entry["label"]))
        print("| system | " + " | ".join(GROUPS) + " |")
        print("| --- |" + " ---: |" * len(GROUPS))
        for system in SYSTEMS:
            cells = []
            for group in GROUPS:
                entry = run.get(group, {}).get(system)
                if entry is None:
                    cells.append("–")
                elif group == "roundtrip":
                    cells.append(fmt_ns(entry["median_ns"]))
                else:
                    cells.append("%.2f M/s" % (entry["items_per_s"] / 1e6))
            print("| %s | %s |" % (system, " | ".join(cells)))
        cells = []
        for group in GROUPS:
            entries = run.get(group, {})
            if "ringbatch" not in entries:
                cells.append("–")
                continue
            # rtrb is the single-producer reference, not a peer.
            peers = {k: v for k, v in entries.items() if k not in ("ringbatch", "rtrb")}
            if group == "roundtrip":
                best = min(peers, key=lambda k: peers[k]["median_ns"])
                ratio = peers[best]["median_ns"] / entries["ringbatch"]["median_ns"]
            else:
                best = max(peers, key=lambda k: peers[k]["items_per_s"])
                ratio = entries["ringbatch"]["items_per_s"] / peers[best]["items_per_s"]
            cells.append("%.2f× (%s)" % (ratio, best))
        print("| **ringbatch vs best peer** | %s |" % " | ".join(cells))
        print()


# --------------------------------------------------------------------------
# svg
# --------------------------------------------------------------------------


def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Panel:
    """A plot area with a log-scale y axis."""

    def __init__(self, out, x, y, w, h, title, ymin, ymax, ylabel, yfmt):
        self.out, self.x, self.y, self.w, self.h = out, x, y, w, h
        self.lo, self.hi = math.log10(ymin), math.log10(ymax)
        out.append(
            '<text x="%d" y="%d" font-size="15" font-weight="bold">%s</text>'
            % (x, y - 12, esc(title))
        )
        out.append(
            '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (x, y, w, h)
        )
        decade = math.floor(self.lo)
        # Grid lines at 1, 2, 5 per decade; at 1 only when there are many.
        marks = (1, 2, 5) if self.hi - self.lo <= 4 else (1,)
        while decade <= self.hi:
            for m in marks:
                v = m * 10**decade
                if ymin <= v <= ymax:
                    py = self.py(v)
                    out.append(
                        '<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>'
                        % (x, py, x + w, py)
                    )
                    out.append(
                        '<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>'
                        % (x - 5, py + 4, esc(yfmt(v)))
                    )
            decade += 1
        out.append(
            '<text x="%d" y="%d" font-size="12" transform="rotate(-90 %d %d)" '
            'text-anchor="middle">%s</text>'
            % (x - 62, y + h // 2, x - 62, y + h // 2, esc(ylabel))
        )

    def py(self, v):
        v = max(v, 10**self.lo)
        return self.y + self.h - (math.log10(v) - self.lo) / (self.hi - self.lo) * self.h


def bounds(values):
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    return lo, hi


def legend(out, x, y, names):
    for i, name in enumerate(names):
        yy = y + i * 17
        out.append(
            '<rect x="%d" y="%d" width="12" height="12" fill="%s"/>'
            % (x, yy - 10, COLORS.get(name, "#333"))
        )
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (x + 17, yy, esc(name)))


def scaling_panel(out, results, top):
    series = results.get("scaling", {}).get("items_per_s", {})
    series = {k: v for k, v in series.items() if v}
    if not series:
        return top
    x0, w, h = 90, 620, 300
    counts = sorted({p for pts in series.values() for p, _ in pts})
    values = [r / 1e6 for pts in series.values() for _, r in pts]
    lo, hi = bounds(values)
    panel = Panel(
        out,
        x0,
        top,
        w,
        h,
        "Throughput by producer count (u64 items, median; log scale)",
        lo,
        hi,
        "M items/s",
        lambda v: "%g" % v,
    )

    def px(p):
        if len(counts) == 1:
            return x0 + w / 2
        return x0 + 30 + (counts.index(p)) * (w - 60) / (len(counts) - 1)

    for p in counts:
        out.append(
            '<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%d</text>'
            % (px(p), top + h + 16, p)
        )
    out.append(
        '<text x="%d" y="%d" font-size="12" text-anchor="middle">producers</text>'
        % (x0 + w // 2, top + h + 34)
    )
    for name, pts in series.items():
        color = COLORS.get(name, "#333")
        coords = [(px(p), panel.py(r / 1e6)) for p, r in pts]
        width = 3 if name == "ringbatch" else 1.5
        if len(coords) > 1:
            out.append(
                '<polyline fill="none" stroke="%s" stroke-width="%s" points="%s"/>'
                % (color, width, " ".join("%.1f,%.1f" % c for c in coords))
            )
        for cx, cy in coords:
            out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (cx, cy, color))
    legend(out, x0 + w + 20, top + 10, list(series))
    return top + h + 80


def bar_panel(out, top, title, groups, series, colors):
    """Grouped bars: `groups` is a list of (label, {series: value_ns})."""
    x0, w, h = 90, 620, 300
    values = [v for _, vals in groups for v in vals.values() if v > 0]
    lo, hi = bounds(values)
    panel = Panel(out, x0, top, w, h, title, lo, hi, "latency", axis_ns)
    slot = w / len(groups)
    bar = min(14, (slot - 10) / len(series))
    for i, (label, vals) in enumerate(groups):
        gx = x0 + i * slot + (slot - bar * len(series)) / 2
        for j, s in enumerate(series):
            v = vals.get(s)
            if not v:
                continue
            y = panel.py(v)
            out.append(
                '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>'
                % (gx + j * bar, y, bar - 1, top + h - y, colors[j], esc(label), s, fmt_ns(v))
            )
        cx = x0 + (i + 0.5) * slot
        out.append(
            '<text x="%.1f" y="%d" font-size="11" text-anchor="end" '
            'transform="rotate(-35 %.1f %d)">%s</text>' % (cx, top + h + 14, cx, top + h + 14, esc(label))
        )
    ly = top + 10
    for j, s in enumerate(series):
        out.append(
            '<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (x0 + w + 20, ly + j * 17 - 10, colors[j])
        )
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (x0 + w + 37, ly + j * 17, s))
    return top + h + 110


PERCENTILE_COLORS = ["#4c72b0", "#dd8452", "#c44e52", "#8172b3", "#222222"]


def svg(results):
    out = []
    top = 50
    top = scaling_panel(out, results, top)
    latency = results.get("latency", {})
    rt = latency.get("roundtrip_ns", {})
    if rt:
        order = sorted(rt, key=lambda k: rt[k]["p50"])
        groups = [(k, {p: rt[k][p] for p in ("p50", "p99", "p99.9", "max")}) for k in order]
        top = bar_panel(
            out,
            top,
            "Round-trip latency, closed loop, one requester (log scale)",
            groups,
            ["p50", "p99", "p99.9", "max"],
            PERCENTILE_COLORS,
        )
    ol = latency.get("open_loop_ns", [])
    if ol:
        max_rate = latency.get("max_rate", {}).get("ringbatch", 1)
        groups = []
        for run in ol:
            label = "%s %.0f%%" % (run["system"].replace("_channel", ""), 100 * run["offered"] / max_rate)
            groups.append((label, {p: run[p] for p in ("p50", "p99", "p99.9", "p99.99", "max")}))
        top = bar_panel(
            out,
            top,
            "Open-loop latency at % of ringbatch's max rate (intended send to handled; log scale)",
            groups,
            ["p50", "p99", "p99.9", "p99.99", "max"],
            PERCENTILE_COLORS,
        )
    m = results.get("machine", {})
    out.append(
        '<text x="20" y="%d" font-size="11" fill="#555">%s</text>'
        % (
            top - 40,
            esc(
                "%s, %s cores (shared, noisy), ringbatch %s: see BENCHMARKS.md"
                % (m.get("model", "?"), m.get("nproc", "?"), m.get("commit", "?"))
            ),
        )
    )
    width, height = 900, top - 20
    doc = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
        'viewBox="0 0 %d %d" font-family="sans-serif">' % (width, height, width, height),
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    doc += out
    doc.append("</svg>")
    with open(SVG, "w", encoding="utf-8") as f:
        f.write("\n".join(doc) + "\n")
    print("wrote", os.path.relpath(SVG, ROOT))


def main(argv):
    command = argv[1] if len(argv) > 1 else "svg"
    if command == "collect":
        collect(argv[2:])
    elif command == "table":
        table(read_json(RESULTS))
    elif command == "svg":
        svg(read_json(RESULTS))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
