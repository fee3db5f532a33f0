"""A real ComfyUI server (`make comfyui`) fed N queued fusion prompts: do they all succeed, and does the server's
memory stay flat after the first? Memory is the server's anonymous RSS (`RssAnon`: what cannot be dropped;
VmRSS also counts page cache of memory-mapped weight files).

    python -m benchmarks.bench_server_queue [--prompts 50] [--side 64]
"""
from __future__ import annotations

import argparse
import sys
import time

from .common import ROOT, markdown_table

sys.path.insert(0, str(ROOT / "tests"))
import comfy_harness as H  # noqa: E402  (the tests' server harness: one way to start ComfyUI)


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--side", type=int, default=64, help="max_side of each fusion")
    args = ap.parse_args(argv)
    reason = H.comfy_missing_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    server = H.ComfyServer(log_path=H.artifacts_dir() / "bench-server-queue.log").start()
    try:
        base = H.fast_prompt(H.load_api("ivif"), max_side=args.side)
        fuse = next(k for k, v in base.items() if v["class_type"] == "DiTFuseFuse")
        t0 = time.perf_counter()
        status, body = server.post_prompt(base)  # the first: loads the model, warms up
        assert status == 200, body
        first = server.wait_history(body["prompt_id"])["status"]["status_str"]
        after_first = rss_kib(server.proc.pid)
        ids = []
        for i in range(1, args.prompts):  # a new seed each: ComfyUI would serve an identical prompt from cache
            prompt = {k: {**v, "inputs": dict(v["inputs"])} for k, v in base.items()}
            prompt[fuse]["inputs"]["seed"] = i
            status, body = server.post_prompt(prompt)
            assert status == 200, body
            ids.append(body["prompt_id"])
        results = [first] + [server.wait_history(pid, timeout=600)["status"]["status_str"] for pid in ids]
        seconds = time.perf_counter() - t0
        end = rss_kib(server.proc.pid)
    finally:
        server.stop()
    ok = results.count("success")
    rows = [[key, f"{after_first[key] / 1024:.0f}", f"{end[key] / 1024:.0f}",
             f"{100 * (end[key] - after_first[key]) / after_first[key]:+.1f} %"] for key in ("RssAnon", "VmRSS")]
    print(f"{args.prompts} queued IVIF prompts (bundled model, max_side {args.side}): {ok} succeeded, "
          f"{seconds:.0f} s in all\n")
    print(markdown_table(["server memory", "after the 1st (MiB)", f"after the {args.prompts}th (MiB)", "growth"],
                         rows))
    return 0 if ok == args.prompts else 1


if __name__ == "__main__":
    sys.exit(main())
