"""Run the side-by-side benchmarks and print one summary: ``python -m benchmarks [--quick]``.

overhead (descend vs a hand-written loop, Lightning, a DataLoader loop), data (in-memory batches vs DataLoader),
roofline (training GFLOP/s vs the matmul peak), speed (channels-last, bf16 and torch.compile on a CNN). Each prints
its own table as it goes; the summary follows.
"""

from __future__ import annotations

import argparse
import os

from . import data, overhead, roofline, speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short pass of each")
    quick = ["--quick"] if parser.parse_args().quick else []
    print("== overhead")
    rows = overhead.main(quick)
    print("\n== data")
    batching = data.main(quick)
    print("\n== roofline")
    roof = roofline.main(quick)
    print("\n== speed")
    options = {row["variant"]: row["ratio"] for row in speed.main(quick)}
    worst = max(rows, key=lambda row: row["descend"])
    print(f"\n== summary (load average {os.getloadavg()[0]:.1f})")
    print(f"overhead: descend / hand-written loop ≤ {worst['descend']:.2f}x (worst: {worst['case']}; target 1.03x); "
          f"final losses equal to 5 decimals in {sum(r['equal_loss'] for r in rows)} of {len(rows)} rows")
    print("data: in-memory / DataLoader " + ", ".join(f"{r['ratio']:.0f}x at batch {r['batch']}" for r in batching)
          + " (target ≥ 3x at batch 32)")
    print(f"roofline: {roof['fraction']:.0%} of the matmul peak while training (target ≥ 50%)")
    print("speed options on the Fashion-MNIST CNN, images/s against fp32: "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in options.items() if name != "fp32"))


if __name__ == "__main__":
    main()
