"""Run the benchmarks a maintainer compares against benchmarks/README.md, at their default (CPU) settings:

    python -m benchmarks.run_all

The real-size benchmark runs as its small CPU check here; on a GPU run ``bash benchmarks/gpu_check.sh``.
"""
import subprocess
import sys

RUNS = [["bench_engine"], ["bench_fuse_speed"], ["bench_metrics"], ["bench_server_queue"],
        ["bench_real_size_gpu", "--small", "--device", "cpu", "--out", "/tmp/ditfuse-real-size-small"]]

if __name__ == "__main__":
    failed = []
    for name, *args in RUNS:
        print(f"\n=== {name} {' '.join(args)}", flush=True)
        if subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *args]) != 0:
            failed.append(name)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
