"""Time to build provider profiles, fit the detector and score, for many providers.

    uv run python bench/bench_detectors.py --providers 50000 --lines 3000000

The dataset is generated first (not timed); then, timed: enrich + rules (needed for the
rule-hit feature), profiles (with the expected values for each provider's patient mix),
fit and score with explanations, for each detector asked.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=50_000)
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--detector", action="append", help="Detector(s) to time (default: the default detector).")
    args = parser.parse_args()

    from data_contracts import load_dataset
    from detectors.profiles import provider_profiles
    from detectors.scoring import DEFAULT, fit_profiles, score_profiles
    from rules import enriched_lines, evaluate
    from secm.synth import generate

    report: dict[str, object] = {"providers": args.providers, "lines": args.lines}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, n_lines=args.lines, seed=5, n_providers=args.providers)
        tables = load_dataset(data).lazy_tables()
        started = time.perf_counter()
        lines = enriched_lines(tables)
        flags = evaluate(tables, lines=lines)
        ruled = time.perf_counter()
        profiles = provider_profiles(lines, flags, patients=tables.get("patients"))
        profiled = time.perf_counter()
        report |= {
            "profiles": profiles.height,
            "providers_profiled": profiles["provider_nihdi"].n_unique(),
            "rules_seconds": ruled - started,
            "profiles_seconds": profiled - ruled,
        }
        for name in args.detector or [DEFAULT]:
            begin = time.perf_counter()
            model = fit_profiles(profiles, name)
            fitted = time.perf_counter()
            scores = score_profiles(model, profiles)
            done = time.perf_counter()
            report[name] = {
                "fit_seconds": fitted - begin,
                "score_explain_seconds": done - fitted,
                "features_fit_score_seconds": (profiled - ruled) + (done - begin),
                "scored": scores.height,
            }
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report, indent=2, default=lambda v: round(v, 2)))


if __name__ == "__main__":
    main()
