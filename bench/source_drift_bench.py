"""Twenty cameras, one goes out of focus: the pooled window against the per-source report
(the scenario of :mod:`simulations.cameras`, which ``vidmon demo --cameras`` runs too).

    python bench/source_drift_bench.py                 # 20 cameras, 8 clean + 12 hours
    python bench/source_drift_bench.py --cameras 50 --per-camera 30

The first run trains the demo's base model into ``--output`` (about 2 minutes on 2
cores), as ``vidmon demo`` does; later runs reuse it.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

from monitor.settings import Settings
from simulations.cameras import CamerasConfig, run_cameras


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--per-camera", type=int, default=25,
                        help="requests per camera per simulated hour")
    parser.add_argument("--clean-hours", type=int, default=8)
    parser.add_argument("--drift-hours", type=int, default=12)
    parser.add_argument("--scenario", default="blur", help="what happens to the one camera")
    parser.add_argument("--camera", type=int, default=7, help="which camera it happens to")
    parser.add_argument("--output", type=Path, default=Path("vidmon-sources-bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run_cameras(Settings(), CamerasConfig(
        cameras=args.cameras, per_camera=args.per_camera, clean_hours=args.clean_hours,
        drift_hours=args.drift_hours, scenario=args.scenario, camera=args.camera,
        output=args.output, seed=args.seed), lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
