"""Budget screening speed: milliseconds to check one sample of each default space against a
parameter + FLOPs budget without training (meta-device counting), and each space's extremes.

    python benchmarks/screening_speed.py [--samples 200]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from search_spaces.budget import Budget, _params_and_flops, check_sample, complexity_range
from search_spaces.config import default_config

SHAPES = {"digits": dict(in_channels=1, input_size=8, num_classes=10),
          "cifar": dict(in_channels=3, input_size=32, num_classes=10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    print("| space | shape | size | candidates | params min..max | FLOPs min..max | ms per sample (median of 5 runs) |")
    print("|---|---|---|---|---|---|---|")
    for family in ("resnet", "mlp"):
        for shape_name, shape in SHAPES.items():
            config = default_config(family, **shape)
            extremes = complexity_range(config)
            labels = config.labels()
            rng = random.Random(0)
            samples = [{k: rng.choice(v) for k, v in labels.items()} for _ in range(args.samples)]
            budget = Budget(max_params=extremes["largest"].params // 2, max_flops=extremes["largest"].flops // 2)
            runs = []
            for _ in range(5):
                _params_and_flops.cache_clear()  # time real counting, not the cache
                start = time.perf_counter()
                for sample in samples:
                    check_sample(config, sample, budget)
                runs.append((time.perf_counter() - start) / len(samples) * 1e3)
            lists = (f"paths {list(config.path_counts)}, routing {len(config.routings)} types, density "
                     f"{list(config.densities)}, widths {[list(w) for w in config.widths]}, blocks {list(config.blocks)}")
            low, high = extremes["smallest"], extremes["largest"]
            print(f"| {family} | {shape_name} | {config.size():,} | {lists} | {low.params:,}..{high.params:,} | "
                  f"{low.flops:,}..{high.flops:,} | {statistics.median(runs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
