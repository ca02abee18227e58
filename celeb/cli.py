"""The `celeb` command: one sub-command per step of the pipeline.

    celeb synth OUT --n N --seed S          synthetic faces in CelebA's layout
    celeb prepare CELEBA_DIR --out DATA     annotations -> table, images -> decode-once cache
    celeb split DATA --strategy balanced    identity-disjoint splits with a balance report
    celeb train cvae|nvae|classifier CONFIG one local training run (no Ray)
    celeb sweep SPEC.yaml [--resume]        a Ray Tune sweep (Optuna + ASHA), local or on a cluster
    celeb review SWEEP_DIR --metric M       rank checkpoints, an HTML page of the best, export one
    celeb traverse CHECKPOINT               latent traversal panels and dimension table of one CVAE or NVAE
    celeb wandb SWEEP_DIR [--upload]        write (or upload) W&B runs from sweep and run folders

Each sub-command is a thin wrapper over a library function; heavy imports happen inside them so
that `celeb --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from celeb import logs
from celeb.data.splits import STRATEGIES


def _cmd_synth(args: argparse.Namespace) -> None:
    from celeb.synth import synthesize

    synthesize(Path(args.out), n=args.n, seed=args.seed, identities=args.identities,
               images=not args.no_images, workers=args.workers)
    what = "annotations" if args.no_images else "images and annotations"
    print(f"wrote {args.n} synthetic faces' {what} to {args.out}")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from celeb.data.annotations import describe_missing, load_annotations, write_table
    from celeb.data.schema import IMAGE_ID, TABLE_FILE

    celeba_dir, data_dir = Path(args.celeba_dir), Path(args.out)
    annotations = load_annotations(celeba_dir)
    table_path = data_dir / TABLE_FILE
    write_table(annotations.table, table_path, annotations.missing)
    print(f"table: {len(annotations.table):,} images -> {table_path}")
    if annotations.missing:
        print(describe_missing(annotations.missing))
    from celeb.synth import copy_true_factors

    factors = copy_true_factors(celeba_dir, data_dir, annotations.table[IMAGE_ID])
    if factors is not None:
        print(f"true factors (synthetic faces): {factors}; `celeb review` checks latent labels against them")

    if args.no_images:
        return
    image_dir = _find_image_dir(celeba_dir)
    if image_dir is None:
        print(f"no image folder (img_align_celeba/) under {celeba_dir}: built the table only. "
              "Splits and reports work now; add the images and rerun `celeb prepare` for the cache.")
        return

    from celeb.data.cache import build_cache
    from celeb.data.dataset import cache_dir

    image_ids = annotations.table[IMAGE_ID].tolist()
    for size in args.size:
        out = build_cache(image_ids, image_dir, cache_dir(data_dir, size, args.crop), size=size,
                          crop=args.crop, workers=args.workers, skip_bad=args.skip_bad)
        print(f"cache: {size}x{size} images -> {out}")


def _find_image_dir(celeba_dir: Path) -> Path | None:
    """The folder of aligned JPEGs in any common layout (flat, Google Drive's Img/, Kaggle's nested)."""
    from celeb.data.schema import IMAGE_DIR

    for candidate in (celeba_dir / IMAGE_DIR / IMAGE_DIR, celeba_dir / IMAGE_DIR,
                      celeba_dir / "Img" / IMAGE_DIR):
        if candidate.is_dir() and any(candidate.glob("*.jpg")):
            return candidate
    return None


def _cmd_split(args: argparse.Namespace) -> None:
    from celeb.data.annotations import read_table
    from celeb.data.dataset import split_dir
    from celeb.data.schema import TABLE_FILE
    from celeb.data.splits import balance_report, make_split, write_split

    data_dir = Path(args.data_dir)
    table = read_table(data_dir / TABLE_FILE)
    split = make_split(table, strategy=args.strategy, ratios=tuple(args.ratios), seed=args.seed)
    report = balance_report(table, split, strategy=args.strategy, seed=args.seed, ratios=tuple(args.ratios))
    out = split_dir(data_dir, args.name or args.strategy)
    write_split(out, table, split, report)
    sizes = ", ".join(f"{name} {report['splits'][name]['size']:,}" for name in ("train", "val", "test"))
    print(f"{args.strategy} split ({sizes}): worst prevalence gap {report['worst_gap_pp']:.2f} pp "
          f"({report['worst_attribute']}), identity overlap {report['identity_overlap_total']}")
    print(f"report: {out / 'report.md'} (plots: prevalence.png, correlation.png)")


def _cmd_train(args: argparse.Namespace) -> None:
    from celeb.training.local import run_local
    from celeb.training.loop import NonFiniteLossError

    try:
        run_local(args.task, Path(args.config), args.set,
                  run_dir=Path(args.run_dir) if args.run_dir else None,
                  resume=Path(args.resume) if args.resume else None, wandb_project=args.wandb)
    except NonFiniteLossError as error:
        raise SystemExit(f"celeb train: error: {error}") from None


def _cmd_sweep(args: argparse.Namespace) -> None:
    # Ray lives in jobs/, never in the library: the CLI reaches it only here.
    from jobs.sweep import parse_overrides, run_sweep

    run_sweep(Path(args.spec), resume=args.resume, address=args.address, overrides=parse_overrides(args.set))


def _cmd_review(args: argparse.Namespace) -> None:
    from celeb import storage
    from celeb.review import write_review

    roots = [storage.location(r) for r in args.roots]
    out = storage.location(args.out) if args.out else _review_out_dir(roots[0])
    result = write_review(roots, out, args.metric, mode=args.mode, top=args.top,
                          export=storage.location(args.export) if args.export else None,
                          data_dir=Path(args.data_dir) if args.data_dir else None, num_eval_images=args.images,
                          lossless=args.lossless, all_metrics=not args.mig_only)
    board = result.leaderboard
    metric, mode = board.attrs["metric"], board.attrs["mode"]
    shown = [c for c in dict.fromkeys(["rank", "trial", "epoch", metric, "task"]) if c in board]
    print(f"{len(board)} checkpoints of {board['trial'].nunique()} trials, ranked by {metric} ({mode}):")
    print(board[shown].head(10).to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    for note in result.notes:
        print(f"note: {note}")
    if result.cards and result.cards[0].review is not None:
        print(f"\ntop checkpoint ({result.cards[0].row['trial']}):")
        _print_latents(result.cards[0].review)
    print(f"page:        {result.html}")
    print(f"leaderboard: {result.csv}")
    if result.export is not None:
        print(f"exported:    {result.export} (best: {board.iloc[0]['trial']} epoch {board.iloc[0]['epoch']})")


def _review_out_dir(root: str | Path) -> Path:
    """SWEEP_DIR/review for a local sweep; ./review-<sweep name> for one at a URI (said, as it is not beside it)."""
    if isinstance(root, Path):
        return root / "review"
    from celeb import storage

    out = Path(f"review-{storage.name(root)}")
    print(f"{root} is remote storage: the review goes to the local folder ./{out} (--out chooses another)")
    return out


def _cmd_wandb(args: argparse.Namespace) -> None:
    from celeb.records import write_records

    report = write_records([Path(r) for r in args.roots], upload=args.upload, rebuild=args.rebuild,
                           project=args.project)
    print(report.describe(" ".join(args.roots)))
    if report.not_uploaded and args.upload:
        raise SystemExit(f"celeb wandb: {len(report.not_uploaded)} segments were not uploaded; run it again later")


def _cmd_traverse(args: argparse.Namespace) -> None:
    from celeb.review import write_traversal

    result = write_traversal(Path(args.checkpoint), out_dir=Path(args.out) if args.out else None,
                             data_dir=Path(args.data_dir) if args.data_dir else None, faces=args.faces,
                             steps=args.steps, span=args.span, active_only=args.active_only,
                             num_eval_images=args.images, groups=args.group)
    _print_latents(result.review)
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")


def _print_latents(review) -> None:
    """Active and labelled dims, MIG, and (synthetic faces) how many labels match the true factors."""
    from celeb.review import labelled_dimensions

    dims, metrics = review.dimensions, review.metrics
    labelled = labelled_dimensions(dims)
    print(f"  {int(dims['active'].sum())} of {len(dims)} latent dims active, {len(labelled)} labelled"
          + (f", MIG {metrics['mig_fixed']:.3f}" if "mig_fixed" in metrics else ""))
    for row in labelled.itertuples():
        truth = ""
        if "true_factor" in labelled:
            truth = f"   true factor: {row.true_factor} ({'matches' if row.label_matches else 'does not match'})"
        print(f"    {row.label}{truth}")
    if "true_factor_matches" in metrics:
        print(f"  {int(metrics['true_factor_matches'])} dims labelled with their true factor "
              f"({int(metrics['matched_factors'])} distinct factors)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celeb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="draw synthetic faces in CelebA's on-disk layout")
    synth.add_argument("out", help="output folder (becomes a CelebA-layout folder)")
    synth.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--identities", type=int, default=None, help="default: n / 19.9, like CelebA")
    synth.add_argument("--no-images", action="store_true", help="write the annotation files only")
    synth.add_argument("--workers", type=int, default=None)
    synth.set_defaults(func=_cmd_synth)

    prepare = commands.add_parser("prepare", help="annotations -> Parquet table; images -> decode-once cache")
    prepare.add_argument("celeba_dir", help="a CelebA folder (official, torchvision or Kaggle layout)")
    prepare.add_argument("--out", required=True, help="the data dir to write")
    prepare.add_argument("--size", type=int, action="append", default=None,
                         help="cache image size; repeat for several (default 64)")
    prepare.add_argument("--crop", type=int, default=148, help="centre crop before resizing (default 148)")
    prepare.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    prepare.add_argument("--skip-bad", action="store_true", help="skip corrupt or missing JPEGs, recording them")
    prepare.add_argument("--no-images", action="store_true", help="build the table only")
    prepare.set_defaults(func=_cmd_prepare)

    split = commands.add_parser("split", help="identity-disjoint, attribute-balanced splits with a report")
    split.add_argument("data_dir")
    split.add_argument("--strategy", choices=STRATEGIES, default="balanced")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    split.add_argument("--name", default=None, help="split folder name (default: the strategy)")
    split.set_defaults(func=_cmd_split)

    train = commands.add_parser("train", help="one local training run (no Ray, GPU or CPU)")
    train.add_argument("task", choices=("cvae", "nvae", "classifier"))
    train.add_argument("config", help="a YAML config (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set cvae.beta=4 (repeatable)")
    train.add_argument("--run-dir", default=None, help="default: runs/<task>-<time>")
    train.add_argument("--resume", default=None, metavar="CHECKPOINT_DIR",
                       help="continue exactly from a checkpoint folder of an earlier run")
    train.add_argument("--wandb", default=None, metavar="PROJECT",
                       help="also log to this W&B project (offline unless WANDB_API_KEY is set)")
    train.set_defaults(func=_cmd_train)

    sweep = commands.add_parser("sweep", help="a Ray Tune sweep of trials (Optuna search, ASHA stopping)")
    sweep.add_argument("spec", help="a sweep spec, e.g. sweeps/smoke.yaml")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this spec")
    sweep.add_argument("--address", default=None, help="a Ray cluster to join (default: start Ray locally)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec value, e.g. --set num_trials=8 (repeatable)")
    sweep.set_defaults(func=_cmd_sweep)

    review = commands.add_parser("review", help="rank checkpoints of runs/sweeps, an HTML page of the best, export one")
    review.add_argument("roots", nargs="+", metavar="SWEEP_DIR",
                        help="sweep dirs (local, or where Tune stored them: s3://, gs://), run dirs or any "
                             "folders holding checkpoints (searched recursively)")
    review.add_argument("--metric", required=True, help="what to rank by, e.g. val/loss, val/mse, val/mig_fixed")
    review.add_argument("--mode", choices=("min", "max"), default=None,
                        help="min or max is better (default: from the metric's name)")
    review.add_argument("--top", type=int, default=5, help="trials that get a card with panels (default 5)")
    review.add_argument("--out", default=None, help="output folder (default: the first SWEEP_DIR/review; "
                        "./review-NAME for an s3:// or gs:// SWEEP_DIR)")
    review.add_argument("--export", default=None, metavar="FILE", help="write the best checkpoint as one file")
    review.add_argument("--data-dir", default=None, help="data dir for the panels (default: each config's)")
    review.add_argument("--images", type=int, default=2000, help="val images to evaluate latents on (default 2000)")
    review.add_argument("--lossless", action="store_true",
                        help="inline face panels as PNG, not JPEG (a page about 5x larger)")
    review.add_argument("--mig-only", action="store_true",
                        help="score the cards' latents by MIG only (skip DCI, SAP and the β-VAE/FactorVAE scores)")
    review.set_defaults(func=_cmd_review)

    traverse = commands.add_parser("traverse", help="latent traversal panels and dimension table of one CVAE or NVAE")
    traverse.add_argument("checkpoint", help="a checkpoint folder or a file written by `celeb review --export`")
    traverse.add_argument("--data-dir", default=None, help="default: the data dir in the checkpoint's config")
    traverse.add_argument("--out", default=None,
                          help="output folder (default: CHECKPOINT/traverse, or FILE_traverse beside a file)")
    traverse.add_argument("--faces", type=int, default=4, help="reference val faces (default 4)")
    traverse.add_argument("--steps", type=int, default=7, help="values per traversal row (default 7)")
    traverse.add_argument("--span", type=float, default=3.0, help="sweep mean ± span·σ (default 3)")
    traverse.add_argument("--active-only", action="store_true", help="leave inactive (collapsed) dims out")
    traverse.add_argument("--group", type=int, action="append", default=[],
                          help="hierarchical VAE: also traverse lower latent group G channel by channel, "
                               "in prior σ (repeatable; groups 1.. below the top group 0)")
    traverse.add_argument("--images", type=int, default=2000, help="val images to evaluate latents on (default 2000)")
    traverse.set_defaults(func=_cmd_traverse)

    records = commands.add_parser(
        "wandb", help="write each run's W&B record from its folder (after a killed driver), or upload them",
        description="Bring the W&B runs of sweep trials and local runs up to date with their folders: every "
                    "finished epoch, its panels and tables, the best epoch as summary, and how the run ended. "
                    "Records are written offline under each folder's wandb/; --upload sends those not yet "
                    "uploaded (e.g. after a W&B outage; needs WANDB_API_KEY).")
    records.add_argument("roots", nargs="+", metavar="SWEEP_DIR", help="sweep folders or run folders")
    records.add_argument("--upload", action="store_true", help="also upload every segment not yet uploaded")
    records.add_argument("--rebuild", action="store_true",
                         help="delete the records there first and write them again from the folders")
    records.add_argument("--project", default=None, help="W&B project for runs that have no record yet "
                                                         "(default: the one recorded, else celeb)")
    records.set_defaults(func=_cmd_wandb)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.show()
    if getattr(args, "size", "n/a") is None:
        args.size = [64]
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        # Our errors already name the file, the line and the fix; a traceback adds nothing.
        print(f"celeb {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
