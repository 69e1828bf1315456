"""How well provider scores find anomalous providers, over a grid of generator settings.

    uv run python bench/detection_quality.py                 # the whole grid, held-out seeds
    uv run python bench/detection_quality.py --cells base --seeds 1,2   # tuning seeds
    uv run python bench/detection_quality.py --cache .bench-cache      # profiles kept between runs

Each cell changes one thing from a base dataset (realistic anomalies, a median of about 200
patients a year, 1 000 providers, two years, every anomaly kind): practice size, anomaly
strength, number of providers (hence peer-group size), the mix of kinds, one year of data,
legitimately atypical GPs (on night duty, in nursing homes, on rural rounds: false leads by
construction; ``atypical_in_top_k`` is the share of the top k they take).
Every cell is generated with each seed, then scored by the default detector and, in the same
process, by simple baselines:

- ``max_z``: the largest one-sided robust z over the features;
- ``iforest_z``: an Isolation Forest over the peer-normalised features;
- ``ensemble``: the rank-averaged PyOD ensemble (the previous default) over the same.

All read the default detector's features, normalised in the same peer groups, as
observed/expected ratios for the patient mix (the generator writes the ``patients`` table);
``default_no_mix`` is the default detector without the patient mix, to show what it adds.

A provider's score is its mean over periods (a lead that persists counts more than a one-off
year). Providers that carry the generator's rule scenarios are left out of the evaluation:
their injected lines make their profiles unusual by construction, without a label. Metrics: ROC-AUC, average precision and
precision at k = the number of anomalous providers, overall and per anomaly kind (each kind
against the ordinary providers). Seeds 1 and 2 are for tuning; the held-out seeds are not.
A cell with few anomalous providers gives noisy figures (with 8, one provider moves precision at
k by 0.125), so each cell takes held-out seeds in order, at least three, until it has
``--min-anomalous`` anomalous providers in all (60 by default) or the twelve seeds are used.
Last, per cell, how far the default detector leads ``max_z`` and ``iforest_z`` seed by seed,
with a 95 % interval over the seeds (see :func:`margins`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Cell:
    name: str
    patients: int = 200  # median patients a year
    providers: int = 1000
    strength: str = "realistic"
    kinds: tuple[str, ...] = ("upcoding", "excessive_volume", "phantom_patients", "evening_share")
    share: float = 0.005
    years: int = 2
    atypical: float = 0.0  # share of GPs per kind of legitimately atypical practice


BASE = Cell("base")
CELLS = {
    c.name: c
    for c in (
        BASE,
        replace(BASE, name="small practices", patients=60),
        replace(BASE, name="tiny practices", patients=50, providers=1500),
        replace(BASE, name="large practices", patients=800, providers=500),
        replace(BASE, name="very large practices", patients=2000, providers=250),
        replace(BASE, name="subtle", strength="subtle"),
        replace(BASE, name="subtle small", strength="subtle", patients=60),
        replace(BASE, name="blatant", strength="blatant"),
        replace(BASE, name="blatant small", strength="blatant", patients=60),
        replace(BASE, name="few peers", providers=150),
        replace(BASE, name="many peers", providers=6000, patients=60),
        replace(BASE, name="volume and phantoms", kinds=("excessive_volume", "phantom_patients"), share=0.01),
        replace(BASE, name="coding only", kinds=("upcoding", "evening_share"), share=0.01),
        replace(BASE, name="one year", years=1),
        replace(BASE, name="one year small", years=1, patients=60),
        replace(BASE, name="atypical GPs", atypical=0.05),
    )
}
HELD_OUT_SEEDS = (101, 202, 303, 404, 505, 606, 707, 808, 909, 1010, 1111, 1212)
MIN_SEEDS = 3
# The default detector, the same without the patient mix, and the baselines.
DETECTORS = ("default", "default_no_mix", "max_z", "iforest_z", "ensemble")


def _baselines(profiles: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Scores per profile row of the simple baselines and of the previous default.

    They read the same features as the default detector, robust-z normalised within the
    same peer groups (as observed/expected ratios where the patient mix is known), so that
    the comparison is between detectors, not feature sets.
    """
    from detectors.indicators import FEATURES
    from detectors.patient_mix import observed_to_expected
    from detectors.scoring import matrix, normalise
    from detectors.zoo import Detector

    normalised = normalise(observed_to_expected(profiles), FEATURES)
    X = matrix(normalised, FEATURES)
    keys = normalised.select("provider_nihdi", "period")
    out = {"max_z": keys.with_columns(pl.Series("score", np.clip(X, 0, None).max(axis=1)))}
    for name, detector in (("iforest_z", "iforest"), ("ensemble", "ensemble")):
        out[name] = keys.with_columns(pl.Series("score", Detector(detector, random_state=0).fit(X).score(X)))
    return out


def _champion(profiles: pl.DataFrame) -> pl.DataFrame:
    from detectors.scoring import fit_profiles, score_profiles

    return score_profiles(fit_profiles(profiles), profiles).select("provider_nihdi", "period", "score")


def _share_in_top_k(scored: pl.DataFrame, providers: pl.Series, k: int) -> float:
    """The share of the ``k`` best scores that ``providers`` take, providers tied at the k-th
    score sharing its places as precision at k shares them."""
    from detectors.tracking import precision_at_k

    among = scored["provider_nihdi"].is_in(providers.implode()).to_numpy()
    return precision_at_k(among, scored["score"].to_numpy(), k)


def evaluate(
    profiles: pl.DataFrame, labels: pl.DataFrame, exclude: pl.Series, atypical: pl.DataFrame, *, verdicts: bool = False
) -> list[dict[str, object]]:
    """Per detector and anomaly kind (and ``all``): the metrics at provider level, and the
    share of the top k taken by legitimately ``atypical`` providers (``provider_nihdi``,
    ``atypical``: the kind of practice), in all and per kind; with ``verdicts``, also
    what verdicts on 1, 5 and 20 % of providers add (``verdict_lift``)."""
    from detectors.tracking import quality, verdict_lift

    started = time.perf_counter()
    scored = {"default": _champion(profiles)}
    seconds = time.perf_counter() - started
    mix = [c for c in profiles.columns if c.startswith("expected_")]
    if mix:
        scored["default_no_mix"] = _champion(profiles.drop(mix))
    scored |= _baselines(profiles)
    rows: list[dict[str, object]] = []
    for detector, scores in scored.items():
        per_provider = (
            scores.filter(~pl.col("provider_nihdi").is_in(exclude.implode()))
            .group_by("provider_nihdi")
            .agg(pl.col("score").mean())
            .join(labels.select("provider_nihdi", "anomaly"), on="provider_nihdi", how="left")
        )
        kinds = ["all", *sorted(labels["anomaly"].unique().to_list())]
        for kind in kinds:
            subset = per_provider.filter(pl.col("anomaly").is_null() | (pl.col("anomaly") == kind) | (kind == "all"))
            anomalous = subset.filter(pl.col("anomaly").is_not_null())
            metrics = quality(subset, anomalous, anomalous.height)
            if metrics:
                k = anomalous.height
                metrics["atypical_in_top_k"] = _share_in_top_k(subset, atypical["provider_nihdi"], k)
                for practice, ids in atypical.group_by("atypical"):
                    metrics[f"{practice[0]}_in_top_k"] = _share_in_top_k(subset, ids["provider_nihdi"], k)
                rows.append({"detector": detector, "kind": kind, "anomalous": anomalous.height, **metrics})
    rows.append({"detector": "default", "kind": "seconds", "seconds": seconds})
    if verdicts:
        lift = verdict_lift(profiles.filter(~pl.col("provider_nihdi").is_in(exclude.implode())), labels)
        rows.append({"detector": "verdicts", "kind": "lift", **lift})
    return rows


@dataclass(frozen=True)
class CellData:
    """What one seed of a cell gives the evaluation: the profiles, the generator's labels,
    its atypical practices and the providers carrying rule scenarios."""

    profiles: pl.DataFrame
    labels: pl.DataFrame
    atypical: pl.DataFrame
    scenario: pl.DataFrame

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in CACHED:
            getattr(self, name).write_parquet(folder / f"{name}.parquet")

    @classmethod
    def read(cls, folder: Path) -> CellData:
        return cls(*(pl.read_parquet(folder / f"{name}.parquet") for name in CACHED))


CACHED = ("profiles", "labels", "atypical", "scenario")
# What a cell's profiles are made by: a cached seed is generated again when any of these changes.
PROFILE_SOURCES = (
    "secm/synth",
    "secm/pipeline.py",
    "data_contracts",
    "rules",
    "detectors/profiles.py",
    "detectors/patient_mix.py",
)


def fingerprint(cell: Cell, seed: int) -> str:
    """A key for a cell's seed and the code that makes its profiles (:data:`PROFILE_SOURCES`)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(repr((cell, seed)).encode())
    for source in PROFILE_SOURCES:
        path = root / source
        for file in sorted(path.rglob("*") if path.is_dir() else [path]):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.relative_to(root).as_posix().encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def generated(cell: Cell, seed: int) -> CellData:
    """The cell's dataset for ``seed``, generated in a temporary folder, and its profiles."""
    from secm.pipeline import profiles_of
    from secm.synth import AnomalySettings, generate, lines_for_practice

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate(
            data,
            n_lines=lines_for_practice(cell.providers, cell.patients, cell.years),
            seed=seed,
            n_providers=cell.providers,
            years=cell.years,
            anomaly_settings=AnomalySettings(
                kinds=cell.kinds, share=cell.share, strength=cell.strength, atypical=cell.atypical
            ),
        )
        profiles = profiles_of(data)
        scenario = pl.read_parquet(data / "billing_lines" / "part-scenarios.parquet").select(
            pl.col("provider_nihdi").unique()
        )
        return CellData(
            profiles,
            pl.read_parquet(data / "labels" / "providers.parquet"),
            pl.read_parquet(data / "labels" / "atypical.parquet"),
            scenario,
        )


def cell_data(cell: Cell, seed: int, cache: Path | None) -> CellData:
    """:func:`generated`, read from ``cache`` when that seed was made there by the same code."""
    if cache is None:
        return generated(cell, seed)
    folder = cache / f"{cell.name.replace(' ', '_')}-{seed}-{fingerprint(cell, seed)}"
    if all((folder / f"{name}.parquet").exists() for name in CACHED):
        return CellData.read(folder)
    data = generated(cell, seed)
    data.write(folder)
    return data


def run_cell(
    cell: Cell, seed: int, *, verdicts: bool = False, cache: Path | None = None
) -> tuple[list[dict[str, object]], dict[str, float]]:
    data = cell_data(cell, seed, cache)
    profiles = data.profiles
    # Periods with scenario lines only (the second year of a one-year dataset) are not scored.
    busy = profiles.group_by("period").len().filter(pl.col("len") >= cell.providers // 2)["period"]
    profiles = profiles.filter(pl.col("period").is_in(busy.implode()))
    from detectors.peers import assign_peer_groups

    grouped = assign_peer_groups(profiles)

    def median(frame: pl.DataFrame, column: str) -> float:
        return float(frame.select(pl.col(column).median().fill_null(0.0)).item())

    shape = {
        "median_patients_a_year": median(profiles, "patients"),
        "median_lines_a_year": median(profiles, "lines"),
        "median_peer_group": median(grouped, "peer_group_size"),
    }
    results = evaluate(profiles, data.labels, data.scenario["provider_nihdi"], data.atypical, verdicts=verdicts)
    return results, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="all", help=f"Comma-separated cell names or all: {', '.join(CELLS)}")
    parser.add_argument("--seeds", help="Comma-separated seeds for every cell (default: held-out seeds, see above).")
    parser.add_argument("--min-anomalous", type=int, default=60, help="Held-out seeds per cell until this many.")
    parser.add_argument("--json", type=Path, help="Also write every row to this file.")
    parser.add_argument("--from-json", type=Path, help="Summarise the rows of an earlier --json instead of running.")
    parser.add_argument("--verdicts", action="store_true", help="Also measure the lift of inspectors' verdicts.")
    parser.add_argument(
        "--cache",
        type=Path,
        help="Keep each seed's profiles and labels in this folder and read them back while the code "
        "that makes them is unchanged: detectors can then be compared over the grid in minutes.",
    )
    args = parser.parse_args()
    names = list(CELLS) if args.cells == "all" else [c.strip() for c in args.cells.split(",")]
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        parser.error(f"unknown cell(s) {unknown}; known: {', '.join(CELLS)}")
    fixed = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        names = []
    else:
        rows = []
    for name in names:
        anomalous = 0
        for i, seed in enumerate(fixed or HELD_OUT_SEEDS):
            if not fixed and i >= MIN_SEEDS and anomalous >= args.min_anomalous:
                break
            started = time.perf_counter()
            results, shape = run_cell(CELLS[name], seed, verdicts=args.verdicts, cache=args.cache)
            rows += [{"cell": name, "seed": seed, **shape, **r} for r in results]
            anomalous += next(int(r["anomalous"]) for r in results if r["kind"] == "all")  # type: ignore[call-overload]
            print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s, {anomalous} anomalous", flush=True)
    table = pl.DataFrame([r for r in rows if r["kind"] not in ("seconds", "lift")], infer_schema_length=None)
    lifts = [r for r in rows if r["kind"] == "lift"]
    summary = (
        table.group_by("cell", "detector", "kind", maintain_order=True)
        .agg(
            pl.col("median_patients_a_year", "median_peer_group").mean().round(0),
            pl.col("anomalous").sum(),
            pl.col("seed").n_unique().alias("seeds"),
            pl.col("roc_auc", "average_precision", "precision_at_k", "atypical_in_top_k").mean().round(3),
        )
        .sort("cell", "kind", "detector", maintain_order=True)
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        overall = summary.filter(pl.col("kind") == "all").pivot(
            "detector",
            index=["cell", "median_patients_a_year", "median_peer_group"],
            values=["roc_auc", "precision_at_k", "atypical_in_top_k"],
        )
        print(overall)
        print(summary.filter(pl.col("kind") != "all").pivot("detector", index=["cell", "kind"], values="roc_auc"))
    print(markdown(summary))
    print(margins(table))
    if lifts:
        print(verdict_table(pl.DataFrame(lifts)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def verdict_table(lifts: pl.DataFrame) -> str:
    """Per cell, precision@k and average precision on untouched providers, unsupervised and
    guided by verdicts on 1, 5 and 20 % of providers (mean over seeds)."""
    shares = ("1pct", "5pct", "20pct")
    head = "| cell | p@k unsupervised | " + " | ".join(f"p@k guided {s}" for s in shares)
    head += " | AP unsupervised | " + " | ".join(f"AP guided {s}" for s in shares) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(shares))]
    means = lifts.group_by("cell", maintain_order=True).agg(pl.col(c).mean() for c in lifts.columns if "_" in c)
    for row in means.iter_rows(named=True):
        cells = [str(row["cell"]), f"{row['precision_at_k_unsupervised_1pct']:.2f}"]
        cells += [f"{row[f'precision_at_k_guided_{s}']:.2f}" for s in shares]
        cells += [f"{row['average_precision_unsupervised_1pct']:.2f}"]
        cells += [f"{row[f'average_precision_guided_{s}']:.2f}" for s in shares]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(summary: pl.DataFrame) -> str:
    """The overall figures as the README's table: ROC-AUC and precision@k per detector."""
    detectors = [d for d in DETECTORS if d in summary["detector"]]
    head = "| cell | patients a year | peers | seeds | anomalous | " + " | ".join(f"ROC-AUC {d}" for d in detectors)
    head += " | " + " | ".join(f"p@k {d}" for d in detectors) + " |"
    lines = [head, "|" + "---|" * (5 + 2 * len(detectors))]
    overall = summary.filter(pl.col("kind") == "all")
    for (cell,), rows in overall.partition_by("cell", as_dict=True, maintain_order=True).items():
        by = {r["detector"]: r for r in rows.iter_rows(named=True)}
        first = by["default"]
        cells = [str(cell), f"{first['median_patients_a_year']:.0f}", f"{first['median_peer_group']:.0f}"]
        cells += [str(first["seeds"]), str(first["anomalous"])]
        cells += [f"{by[d]['roc_auc']:.3f}" for d in detectors] + [f"{by[d]['precision_at_k']:.2f}" for d in detectors]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BASELINES = ("max_z", "iforest_z")


def margins(table: pl.DataFrame) -> str:
    """Per cell, how far the default detector leads each baseline, seed by seed: the mean
    difference in ROC-AUC and in precision at k, with a 95 % interval over the cell's seeds
    (Student's t). A lead whose interval holds 0 is not one the seeds can tell from a tie."""
    from scipy import stats  # type: ignore[import-untyped]

    overall = table.filter(pl.col("kind") == "all")
    wide = overall.pivot("detector", index=["cell", "seed"], values=["roc_auc", "precision_at_k"])
    head = "| cell | seeds | " + " | ".join(f"ROC-AUC default - {b} | p@k default - {b}" for b in BASELINES) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(BASELINES))]
    for (cell,), rows in wide.partition_by("cell", as_dict=True, maintain_order=True).items():
        cells = [str(cell), str(rows.height)]
        for baseline in BASELINES:
            for metric in ("roc_auc", "precision_at_k"):
                diff = (rows[f"{metric}_default"] - rows[f"{metric}_{baseline}"]).to_numpy()
                mean = float(diff.mean())
                if len(diff) < 2:
                    cells.append(f"{mean:+.3f}")
                    continue
                half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
                cells.append(f"{mean:+.3f} ({mean - half:+.3f} to {mean + half:+.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
