"""What a load test run shows a person: the table on the terminal, and report.json, report.md and
report.png in the run directory.

It owns the presentation only. The input is the run summary that `bench.run` builds: the load
generator's result for each phase (see `bench.loadgen.LoadGenerator.result`), the ceiling, the
switch's memory, the journal check and, when profiled, the switch's top functions (read here from
py-spy's raw collapsed stacks).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")
PROFILE_TOP = 25              # functions listed by own and by total samples
OWN_PACKAGES = ("switch", "routing", "simulators", "bench")   # listed by module in the profile, not as one
PNG_SIZE = (12, 8)            # inches
PNG_DPI = 100
CEILING_LINE_FACTOR = 3       # the ceiling is drawn when it is at most this many times the highest rate shown


# -- rows ----------------------------------------------------------------------------------
def phase_row(result: dict) -> dict:
    """One line of the table: a phase's rates, counts, codes, errors and latency percentiles."""
    return {
        "phase": result["label"],
        "offered/s": result["offered_rate"],
        "achieved/s": result["achieved_rate"],
        "offered": result["offered"],
        "sent": result["sent"],
        "answered": result["answered"],
        "approved": result["approved"],
        "codes": result["codes"],
        "errors": result["errors"],
        "latency_ms": {key: result["latency_ms"][key] for key in PERCENTILES},
        "send_lag_p99_ms": result["send_lag_ms"]["p99"],
    }


def _columns(rows: list[dict]) -> tuple[list[str], list[str]]:
    codes = sorted({code for row in rows for code in row["codes"]})
    errors = sorted({kind for row in rows for kind in row["errors"]})
    return codes, errors


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[dict]) -> list[list[str]]:
    """Header and rows as text cells: one column per response code and per client error seen."""
    codes, errors = _columns(rows)
    header = ["phase", "offered/s", "achieved/s", "sent", "answered", *[f"39={code}" for code in codes],
              *errors, *[f"{key} ms" for key in PERCENTILES], "send lag p99 ms"]
    lines = [header]
    for row in rows:
        lines.append([row["phase"], f"{row['offered/s']:.0f}", f"{row['achieved/s']:.0f}", str(row["sent"]),
                      str(row["answered"]), *[str(row["codes"].get(code, 0)) for code in codes],
                      *[str(row["errors"].get(kind, 0)) for kind in errors],
                      *[_ms(row["latency_ms"][key]) for key in PERCENTILES], _ms(row["send_lag_p99_ms"])])
    return lines


def print_table(summary: dict, out: TextIO = sys.stdout) -> None:
    lines = table([phase_row(result) for result in summary["phases"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(width) if i else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(line, widths))), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)
    print(file=out)
    for line in verdict_lines(summary):
        print(line, file=out)


def verdict_lines(summary: dict) -> list[str]:
    """The sentences under the table: ceiling and ratio, search result, memory, journal, profile."""
    lines = []
    ceiling = summary.get("ceiling")
    if ceiling:
        lines.append(f"ceiling (load generator against the bare bank87 responder): {ceiling['achieved_rate']:.0f}/s"
                     f" answered, p99 {_ms(ceiling['latency_ms']['p99'])} ms")
    headline = summary.get("headline")
    if headline and headline["rate"] is None:
        lines.append(f"switch: {headline['description']}: none")
    elif headline:
        ratio = f" = {headline['ratio_of_ceiling']:.0%} of the ceiling" if headline.get("ratio_of_ceiling") else ""
        lines.append(f"switch: {headline['description']}: {headline['rate']:.0f}/s{ratio}")
    search = summary.get("search")
    if search:
        lines.append(f"search: objective p99 <= {search['objective_p99_ms']} ms and no errors; highest rate that held:"
                     f" {search['highest_held'] or 'none'}; first that failed: {search['first_failed'] or 'none'}"
                     f" ({search['failure'] or 'stopped at the maximum rate'})")
    rss = summary.get("switch_rss")
    if rss:
        tree = f" ({rss['tree_kib'] / 1024:.1f} MiB with its {rss['processes'] - 1} child processes)" \
            if rss["processes"] > 1 else ""
        lines.append(f"switch memory at the end: VmRSS {rss['kib'] / 1024:.1f} MiB{tree}")
    journal = summary.get("journal")
    if journal:
        if journal.get("error"):
            lines.append(f"journal check: could not count: {journal['error']}")
        else:
            verdict = "every approval the load generator saw is journaled" if journal["approved_journaled"] >= \
                journal["approved_seen"] else "MISSING approvals in the journal"
            lines.append(f"journal check ({journal['schema']}): {journal['approved_journaled']} approvals journaled, "
                         f"{journal['approved_seen']} seen by the load generator, {journal['rows']} transactions: "
                         f"{verdict}")
    cpu = summary.get("cpu")
    if cpu:
        parts = ", ".join(f"{name} {cores:.2f}" for name, cores in sorted(cpu["cores"].items(), key=lambda kv: -kv[1]))
        lines.append(f"CPU during the measured load, in cores of {cpu['machine_cores']} ({cpu['wall_s']} s): {parts}")
        if cpu.get("switch_us_per_approval"):
            lines.append(f"switch CPU per top-up: {cpu['switch_us_per_approval']} us per approval, "
                         f"{cpu['switch_us_per_answer']} us per answer")
    profile = summary.get("profile")
    if profile:
        lines.append(f"switch profile ({profile['samples']} samples, py-spy): own time by package: " + ", ".join(
            f"{entry['function']} {entry['share']:.0%}" for entry in profile["packages"][:8]))
        lines.append("top functions by own time:")
        for entry in profile["own"][:10]:
            lines.append(f"  {entry['share']:6.1%}  {entry['function']}")
    for note in summary.get("notes", []):
        lines.append(f"note: {note}")
    return lines


# -- files ---------------------------------------------------------------------------------
def write_json(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=1, default=str))


def write_markdown(summary: dict, path: Path) -> None:
    meta = summary["meta"]
    out = [f"# airswitch load test {meta['run']}", "",
           f"- when: {meta['started_at']} (UTC); machine: {meta['cpus']} CPUs, load average at start "
           f"{meta['load_average']}; Python {meta['python']}",
           f"- command: `{meta['command']}`", f"- run directory: `{meta['run_dir']}`", ""]
    lines = table([phase_row(result) for result in summary["phases"]])
    out.append("| " + " | ".join(lines[0]) + " |")
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(lines[0]))) + "|")
    out.extend("| " + " | ".join(line) + " |" for line in lines[1:])
    out.append("")
    out.extend(f"- {line}" if not line.startswith("  ") else f"    - {line.strip()}" for line in verdict_lines(summary))
    out.append("")
    if (path.parent / "report.png").exists():
        out += ["![latency and throughput over time](report.png)", ""]
    path.write_text("\n".join(out))


def write_png(summary: dict, path: Path) -> bool:
    """Throughput and latency per second of the phases against the switch. False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    phases = [result for result in summary["phases"] if result["label"] != "ceiling"]
    if not phases:
        return False
    origin = phases[0]["started_epoch"]
    figure, (throughput, latency) = plt.subplots(2, 1, figsize=PNG_SIZE, sharex=True)
    highest = 0
    for index, result in enumerate(phases):
        offset = result["started_epoch"] - origin
        series = result["series"]
        if not series:
            continue
        # Each second is drawn as a step over the second it covers.
        x = [offset + second["t"] for second in series]
        x_end = offset + series[-1]["t"] + 1
        first = index == 0

        def steps(axis, values, **style):
            axis.step([*x, x_end], [*values, values[-1]], where="post", **style)

        steps(throughput, [s["offered"] for s in series], color="tab:gray", linestyle="--",
              label="offered" if first else None)
        steps(throughput, [s["answered"] for s in series], color="tab:blue", label="answered" if first else None)
        steps(throughput, [s["approved"] for s in series], color="tab:green", linestyle=":",
              label="approved" if first else None)
        highest = max(highest, *(s["answered"] for s in series), *(s["offered"] for s in series))
        for key, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:orange"), ("max_ms", "tab:red")):
            points = [(xi + 0.5, s[key]) for xi, s in zip(x, series) if s[key] is not None]
            if points:
                latency.plot(*zip(*points), color=color, marker=".", label=key.replace("_ms", "") if first else None)
        if index % 2:
            for axis in (throughput, latency):
                axis.axvspan(offset, x_end, alpha=0.06, color="black")
        throughput.annotate(result["label"], (offset, 0), xytext=(2, 2), textcoords="offset points", fontsize=8)
    title = f"airswitch load test {summary['meta']['run']}"
    ceiling = summary.get("ceiling")
    if ceiling:
        # Drawn only when it is on the same scale as the load; otherwise it flattens the curves.
        if ceiling["achieved_rate"] <= CEILING_LINE_FACTOR * max(highest, 1):
            throughput.axhline(ceiling["achieved_rate"], color="tab:purple", linestyle="-.",
                               label=f"ceiling {ceiling['achieved_rate']:.0f}/s")
        title += f"; ceiling (bare responder) {ceiling['achieved_rate']:.0f}/s"
    objective = (summary.get("search") or {}).get("objective_p99_ms") or summary["meta"].get("objective_p99_ms")
    if objective:
        latency.axhline(objective, color="black", linestyle="--", linewidth=0.8, label=f"objective {objective} ms")
    throughput.set_ylabel("top-ups per second")
    throughput.legend(loc="upper left", fontsize=8)
    throughput.grid(alpha=0.3)
    latency.set_yscale("log")
    latency.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    latency.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    latency.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    latency.set_ylabel("latency per second (ms, from scheduled send)")
    latency.set_xlabel("seconds since the first phase against the switch")
    latency.legend(loc="upper left", fontsize=8)
    latency.grid(alpha=0.3, which="both")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=PNG_DPI)
    plt.close(figure)
    return True


# -- profile -------------------------------------------------------------------------------
def summarize_profile(raw: str, limit: int = PROFILE_TOP) -> dict:
    """Top functions from py-spy's raw output (one "frame;frame;... count" line per distinct stack).

    Own time: samples where the function is the innermost frame. Total time: samples where it is
    anywhere on the stack (counted once per stack even when recursive).
    """
    own: Counter = Counter()
    total: Counter = Counter()
    packages: Counter = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count_value = int(count)
        samples += count_value
        # With --subprocesses py-spy puts a "process <pid>:<command>" frame at the root of each stack.
        frames = [_function(frame) for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += count_value
        packages[_package(frames[-1])] += count_value
        for function in set(frames):
            total[function] += count_value

    def top(counter: Counter) -> list[dict]:
        return [{"function": function, "samples": n, "share": n / samples if samples else 0.0}
                for function, n in counter.most_common(limit)]

    return {"samples": samples, "own": top(own), "total": top(total), "packages": top(packages)}


def _package(function: str) -> str:
    """'name (iso8583/decoder.py)' -> 'iso8583'; our own modules keep their path: 'switch/topup.py'."""
    path = function.rpartition(" (")[2].rstrip(")")
    head = path.split("/", 1)[0]
    return path if head in OWN_PACKAGES else head


def _function(frame: str) -> str:
    """'name (path/file.py:123)' -> 'name (path/file.py)': lines of one function are one entry."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({path})" if path else name


def profile_text(profile: dict) -> str:
    out = [f"{profile['samples']} samples", "", "own time by package (our own code by module):"]
    out += [f"{entry['share']:7.2%} {entry['samples']:7d}  {entry['function']}" for entry in profile["packages"]]
    out += ["", "by own time (innermost frame):"]
    out += [f"{entry['share']:7.2%} {entry['samples']:7d}  {entry['function']}" for entry in profile["own"]]
    out += ["", "by total time (anywhere on the stack):"]
    out += [f"{entry['share']:7.2%} {entry['samples']:7d}  {entry['function']}" for entry in profile["total"]]
    return "\n".join(out) + "\n"
