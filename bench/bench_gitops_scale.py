"""Scale of the GitOps path: the CLI's `plan`, `apply`, `status` at 10,000 and 100,000 routines.

The tree is `bench_plan.py`'s generator (100 routines per file), at 10k (100 files) and 100k (1,000
files). Every figure is one command run as its own process, as an operator runs it: wall time, its
CPU time and its own peak RSS (`os.wait4`'s rusage of that child alone), stdout sent to a file whose
size is reported (the text plan of 100k creates is ~140 MB). The peer, in the same run and also as its
own process, is a bare libyaml parse of the same files (`yaml.load_all` with CSafeLoader, the
documents dropped as they come).

Per size it prints: bare parse; cold `plan` (no journal, no cache) and its ratio to the bare parse
(target ≤ 1.5×); `apply --auto-approve` of every create (target ≤ 10 s); `status` (target: no slower
than a no-op plan); a no-op `plan`; `plan` after editing one file; and a last block with time and
peak RSS per routine of each command at both sizes (target: flat; RSS ≤ 400 MB at 100k).

    .venv/bin/python bench/bench_gitops_scale.py [--sizes 10000:100,100000:1000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import generate  # noqa: E402  (bench/ is a folder of scripts, not a package)

BIN = Path(sys.executable).parent
CLI = str(BIN / "palyra-ops")
BARE = """
import sys, yaml
for p in sys.argv[1:]:
    with open(p, encoding="utf-8") as fh:
        for _ in yaml.load_all(fh.read(), Loader=yaml.CSafeLoader):
            pass
"""


@dataclass
class Run:
    seconds: float
    cpu: float  # user + system seconds of the process itself: on a shared machine the steadier figure
    rss_mb: float
    out_bytes: int
    code: int


def run(argv: list[str], env: dict[str, str], out: Path) -> Run:
    """One command as its own process: wall time, its own peak RSS, the size of what it printed."""
    with open(out, "wb") as fh:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(argv[:3])}… exited {proc.returncode}: {err[-2000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.stat().st_size, proc.returncode)


def median_run(runs: list[Run]) -> Run:
    return Run(statistics.median(r.seconds for r in runs), statistics.median(r.cpu for r in runs),
               max(r.rss_mb for r in runs), runs[-1].out_bytes, runs[-1].code)


def measure(routines: int, files: int, repeat: int, work: Path) -> dict[str, Run]:
    root = work / f"n{routines}"
    src = root / "routines.d"
    src.mkdir(parents=True)
    paths = generate(src, routines, files)
    size = sum(p.stat().st_size for p in paths)
    print(f"\n== {routines:,} routines in {files:,} files, {size / 1e6:.1f} MB of YAML")
    env = {**os.environ, "NO_COLOR": "1", "PALYRA_STATE_ROOT": str(root / "state")}
    env.pop("PALYRA_JOURNAL", None)
    out = root / "stdout"
    res: dict[str, Run] = {}

    def cli(*args: str) -> list[str]:
        return [CLI, *args, "--dir", str(src), "--journal", str(root / "state" / "journal.sqlite3")]

    res["interpreter"] = run([CLI, "--version"], env, out)
    bare, cold = [], []
    for _ in range(repeat):
        bare.append(run([sys.executable, "-c", BARE, *map(str, paths)], env, out))
        cold.append(run(cli("plan"), env, out))  # no journal yet: nothing cached, nothing created
        assert not (root / "state").exists(), "plan must not create the state root"
    res["bare parse"], res["cold plan"] = median_run(bare), median_run(cold)
    res["apply"] = run(cli("apply", "--auto-approve"), env, out)
    res["status"] = median_run([run(cli("status", "--url", "http://127.0.0.1:9"), env, out) for _ in range(repeat)])
    res["no-op plan"] = median_run([run(cli("plan"), env, out) for _ in range(repeat)])
    target = paths[len(paths) // 2]
    target.write_text(target.read_text().replace("report anomalies", "report anomalies (edited)", 1))
    res["plan, 1 edit"] = run(cli("plan", "--detailed-exitcode"), env, out)
    assert res["plan, 1 edit"].code == 2
    shutil.rmtree(root, ignore_errors=True)

    peer = res["bare parse"]
    print(f"{'':<14} {'wall':>9} {'cpu':>9}  {'peak RSS':>9}  {'stdout':>9}")
    for name, r in res.items():
        if name == "interpreter":
            continue
        extra = ""
        if name == "cold plan":
            extra = f"  {r.seconds / peer.seconds:.2f}x bare parse wall, {r.cpu / peer.cpu:.2f}x cpu (target <= 1.5x)"
        elif name == "apply":
            extra = "  (target <= 10 s at 100k)"
        elif name == "status":
            noop = res["no-op plan"]
            extra = f"  {r.seconds / noop.seconds:.2f}x no-op plan wall, {r.cpu / noop.cpu:.2f}x cpu (target <= 1x)"
        print(f"{name:<14} {r.seconds:7.2f} s {r.cpu:7.2f} s  {r.rss_mb:6.0f} MB  {r.out_bytes / 1e6:6.1f} MB{extra}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000:100,100000:1000", help="routines:files, comma separated")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="palyra-bench-scale-"))
    try:
        results = {n: measure(n, f, args.repeat, work) for n, f in sizes}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nper routine (cpu µs / peak RSS above `palyra-ops --version` KB) — target: flat across sizes")
    names = [k for k in next(iter(results.values())) if k != "interpreter"]
    print(f"{'':<14}" + "".join(f"{n:>22,}" for n in results))
    for name in names:
        cells = []
        for n, res in results.items():
            r, base = res[name], res["interpreter"].rss_mb
            cells.append(f"{r.cpu / n * 1e6:9.1f} µs {max(r.rss_mb - base, 0) * 1024 / n:6.2f} KB")
        print(f"{name:<14}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
