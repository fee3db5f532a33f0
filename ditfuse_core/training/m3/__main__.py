"""python -m ditfuse_core.training.m3 OUT_DIR -n 1000: M3 samples as JSONL + PNGs."""
import argparse

from .generator import write_jsonl


def main(argv=None):
    ap = argparse.ArgumentParser(description="write M3 training samples as JSONL + PNG")
    ap.add_argument("out")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--data", default=None, help="shared/data (default) or a train pack folder")
    a = ap.parse_args(argv)
    p = write_jsonl(a.out, a.n, a.seed, a.size, data_root=a.data)
    print(p)


if __name__ == "__main__":
    main()
