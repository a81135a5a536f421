"""Data subcommands of ``aiaa``: convert, infer, evaluate, merge-labels, snapshot, pack-sources, supervoxels,
synthetic-shapes.

Argument parsing and reporting live here; the work is done by the engine core
(``engines.data.convert``, ``engines.evaluation.batch``, ``engines.evaluation.scoring``, ``engines.data.labels``,
``engines.data.snapshot``). Errors print one clear line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Progress", "add_data_commands"]


class Progress:
    """Progress of a loop: a tqdm bar on a terminal, plain lines (``what: n/N name``) otherwise."""

    def __init__(self, what: str, stream: Any = None, progress_file: str | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.bar = None
        self.file = None
        if progress_file:  # a job's worker: progress lines and a heartbeat for the supervisor
            from server.cli.train_progress import ProgressFile

            self.file = ProgressFile(progress_file)

    def close(self) -> None:
        """Stop the progress file's heartbeat."""
        if self.file is not None:
            self.file.close()

    def __call__(self, done: int, total: int, name: str) -> None:
        """Report that item ``done`` of ``total`` (called ``name``) is finished."""
        if self.file is not None:
            self.file.write({"event": "case", "progress": round(done / max(total, 1), 4), "batch": done,
                             "batches": total, "case": name})
        if self.stream.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.what, file=self.stream, unit="case")
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(1)
            if done >= total:
                self.bar.close()
        else:
            print(f"{self.what}: {done}/{total} {name}", file=self.stream, flush=True)


def _fail(command: str, message: object) -> int:
    print(f"aiaa {command}: {message}", file=sys.stderr)
    return 2


def _run(command: str, work: Callable[[], int | None]) -> int:
    from engines.errors import EngineError

    try:
        return int(work() or 0)
    except EngineError as exc:
        return _fail(command, exc)
    except OSError as exc:
        return _fail(command, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


def _merge_labels(args: argparse.Namespace) -> int:
    def work() -> None:
        from engines.data.io import write_volume_file
        from engines.data.labels import merge_masks, read_mask

        masks = [read_mask(spec) for spec in args.masks]
        merged = merge_masks(masks, args.values, names=args.masks)
        write_volume_file(merged, args.output)
        print(f"wrote {args.output}: values {args.values or list(range(1, len(masks) + 1))} from {len(masks)} masks")

    return _run("merge-labels", work)


def _convert(args: argparse.Namespace) -> int:
    def work() -> int:
        from engines.data.convert import convert

        results = convert(args.directory, args.output, source_suffix=args.source_suffix,
                          output_suffix=args.output_suffix, resolution=args.resolution, label=args.label,
                          force=args.force, progress=Progress("convert"))
        for result in results:
            line = f"{result.status}: {result.output}" + (f" ({result.message})" if result.message else "")
            print(line, file=sys.stderr if result.status == "failed" else sys.stdout)
        failed = sum(r.status == "failed" for r in results)
        if failed:
            return _fail("convert", f"{failed} of {len(results)} input(s) could not be converted (see above)")
        return 0

    return _run("convert", work)


def _cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    from engines.data.datalist import load_datalist
    from engines.errors import InvalidInputError
    from engines.evaluation.batch import find_images

    if args.images:
        return find_images(args.images)
    cases = load_datalist(args.datalist).get(args.split) or []
    if not cases:
        raise InvalidInputError(f"{args.datalist} has no '{args.split}' cases")
    return cases


def _infer(args: argparse.Namespace) -> int:
    def work() -> None:
        from engines.evaluation.batch import infer_cases

        cases = _cases(args)
        written = infer_cases(args.config, cases, args.output, perturbation=args.perturbation, seed=args.seed,
                              progress=Progress("infer"))
        print(f"wrote {len(written)} file(s) to {args.output}")

    return _run("infer", work)


def _evaluate(args: argparse.Namespace) -> int:
    def work() -> int:
        from engines.evaluation.scoring import evaluate_masks, evaluate_model, parse_regions

        regions = parse_regions(args.regions) if args.regions else None
        datalists = args.datalist or []
        if args.interactive:
            from engines.evaluation.interactive import evaluate_interactive

            if not (args.config and datalists) or args.predictions or args.labels:
                return _fail("evaluate", "--interactive needs --config and at least one --datalist")
            progress = Progress("evaluate", progress_file=args.progress_file)
            try:
                summary = evaluate_interactive(args.config, datalists, args.output, variants=args.variants,
                                               n_clicks=args.clicks, max_objects=args.max_objects,
                                               structures=args.structures, progress=progress)
            finally:
                progress.close()
            for variant in args.variants:
                print(f"{variant}: " + json.dumps(summary[variant]["overall"]))
            return 0
        if len(datalists) > 1:
            return _fail("evaluate", "give one --datalist (several only with --interactive)")
        datalist = datalists[0] if datalists else None
        if args.predictions or args.labels:
            if not (args.predictions and args.labels) or args.config or datalist:
                return _fail("evaluate", "give either --config and --datalist, or --predictions and --labels")
            evaluate_masks(args.predictions, args.labels, args.output, regions, progress=Progress("evaluate"))
        elif args.config and datalist:
            progress = Progress("evaluate", progress_file=args.progress_file)
            try:
                evaluate_model(args.config, datalist, args.output, regions=regions, split=args.split,
                               perturbation=args.perturbation, seed=args.seed, progress=progress, device=args.device)
            finally:
                progress.close()
        else:
            return _fail("evaluate", "give either --config and --datalist, or --predictions and --labels")
        print((Path(args.output) / "summary.txt").read_text(), end="")
        return 0

    return _run("evaluate", work)


def _point(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not a voxel index i,j,k")
    return values


def _snapshot(args: argparse.Namespace) -> int:
    def work() -> None:
        from engines.data.io import read_volume
        from engines.data.snapshot import render_snapshot
        from engines.evaluation.batch import case_name

        images = [read_volume(path) for path in args.images]
        mask = read_volume(args.mask) if args.mask else None
        png = render_snapshot(images, mask, point=args.point, labels=args.labels,
                              titles=[case_name(p) for p in args.images], alpha=args.alpha)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(png)
        print(f"wrote {output}")

    return _run("snapshot", work)


def _pack_sources(args: argparse.Namespace) -> int:
    def work() -> int:
        from engines.training.interactive import load_interactive_train_config, training_datalists
        from engines.training.sources import load_sources, save_sources_pack

        cfg = load_interactive_train_config(args.train_config)
        lists, _ = training_datalists(cfg, Path(args.train_config).parent)
        sources = load_sources(lists, cfg.min_object_voxels, cfg.max_cases_per_dataset)
        index = save_sources_pack(args.output, sources, args.fraction, args.margin_mm)
        print(f"{args.output}: {len(index['sources'])} volumes, {Path(args.output).stat().st_size / 1e6:.1f} MB")
        return 0

    return _run("pack-sources", work)


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _training_images(args: argparse.Namespace) -> list[str]:
    """Every image file of the first ``--max-cases`` training cases of each ``--datalist``."""
    from engines.evaluation.interactive import case_images, load_interactive_datalist

    return [image for path in args.datalist
            for case in load_interactive_datalist(path).training[:args.max_cases] for image in case_images(case)]


def _supervoxels(args: argparse.Namespace) -> int:
    def work() -> int:
        from engines.data.supervoxels import MERGE_THRESHOLDS, write_supervoxel_datalist

        images = _training_images(args)
        datalist = write_supervoxel_datalist(images, args.output, args.thresholds or MERGE_THRESHOLDS)
        print(f"wrote {datalist} ({len(images)} images)")
        return 0

    return _run("supervoxels", work)


def _synthetic_shapes(args: argparse.Namespace) -> int:
    def work() -> int:
        from engines.data.synthetic_shapes import write_shapes_datalist

        images = _training_images(args)
        datalist = write_shapes_datalist(images, args.output, copies=args.copies, objects=args.objects)
        print(f"wrote {datalist} ({len(images) * args.copies} painted images)")
        return 0

    return _run("synthetic-shapes", work)


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Register the data subcommands on the ``aiaa`` parser's subparsers."""
    merge = sub.add_parser(
        "merge-labels", help="combine binary masks into one label map (later masks overwrite earlier ones)",
        description="Combine binary masks into one label map; mask n gets value n (or --values), later masks win. "
                    "A mask may be FILE:v1,v2 to take those values of a label map, e.g. OTMultiClass.nii.gz:1,3,4.",
    )
    merge.add_argument("masks", nargs="+", metavar="MASK", help="mask files (or FILE:v1,v2,...) in order")
    merge.add_argument("-o", "--output", required=True, help="output label map (.nii.gz, .nii, .nrrd, .mha)")
    merge.add_argument("--values", nargs="+", type=int, default=None, help="value of each mask (default 1..N)")
    merge.set_defaults(func=_merge_labels)

    convert = sub.add_parser(
        "convert", help="DICOM series or image files to NIfTI/MHA, optionally resampled (as tlt-dataconvert)",
        description="Convert every DICOM series (-s .dcm) or every image file with suffix -s under -d into -o, "
                    "keeping the geometry; -r resamples over the same physical extent.")
    convert.add_argument("-d", "--directory", required=True, help="input folder (searched recursively)")
    convert.add_argument("-o", "--output", required=True, help="output folder")
    convert.add_argument("-s", "--source-suffix", default=".dcm",
                         help="input kind: .dcm (DICOM series) or .nii.gz, .nii, .mha, .mhd, .nrrd")
    convert.add_argument("-e", "--output-suffix", default=".nii.gz", choices=[".nii.gz", ".nii", ".mha"])
    convert.add_argument("-r", "--resolution", type=float, nargs="+", default=None, metavar="MM",
                         help="resample to this spacing: one value (isotropic) or three (per axis)")
    convert.add_argument("-l", "--label", action="store_true", help="inputs are label maps (nearest neighbour)")
    convert.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    convert.set_defaults(func=_convert)

    snapshot = sub.add_parser(
        "snapshot", help="PNG of axial, coronal and sagittal views with a mask overlaid",
        description="Axial, coronal and sagittal views (radiological orientation, true aspect) through the "
                    "mask's centre or --point, one row per image, the mask in one colour per label.")
    snapshot.add_argument("images", nargs="+", metavar="IMAGE", help="image(s) on one grid, e.g. the modalities")
    snapshot.add_argument("--mask", help="label map on the images' grid")
    snapshot.add_argument("--point", type=_point, help="voxel index i,j,k the views go through")
    snapshot.add_argument("--labels", nargs="+", help="names of mask values 1, 2, ... for the legend")
    snapshot.add_argument("--alpha", type=float, default=0.5, help="mask opacity (default 0.5)")
    snapshot.add_argument("-o", "--output", required=True, help="output PNG")
    snapshot.set_defaults(func=_snapshot)

    infer = sub.add_parser("infer", help="run a model over a datalist or a folder of images (as tlt-infer)",
                           description="Run a model config over the validation cases of a datalist (or every "
                                       "image of --images DIR) and write the masks as the config's writers say "
                                       "(default: NIfTI on each input's grid, named after the input).")
    infer.add_argument("--config", required=True, help="model config (model_configs/<name>.json)")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--datalist", help="datalist JSON")
    source.add_argument("--images", help="folder of images (segmentation models)")
    infer.add_argument("--split", default="validation", help="datalist section (default: validation)")
    infer.add_argument("-o", "--output", required=True, help="output folder")
    infer.add_argument("--perturbation", type=float, default=0.0,
                       help="extreme-point models: jitter the simulated points by up to this many voxels")
    infer.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    infer.set_defaults(func=_infer)

    evaluate = sub.add_parser(
        "evaluate", help="Dice, HD95 and surface distance of a model or of masks (as tlt-evaluate)",
        description="Score a model on a datalist (--config --datalist) or masks against labels "
                    "(--predictions DIR --labels DIR, matched by file name). Writes raw.csv, summary.json, "
                    "summary.txt and dice_boxplot.png to --output.")
    evaluate.add_argument("--config", help="model config to run")
    evaluate.add_argument("--datalist", action="append", default=None,
                          help="datalist JSON (with --config); with --interactive, interactive datalists "
                               "(repeatable) whose validation objects are run")
    evaluate.add_argument("--split", default="validation", help="datalist section (default: validation)")
    evaluate.add_argument("--predictions", help="folder of predicted masks")
    evaluate.add_argument("--labels", help="folder of label maps (same file names as the predictions)")
    evaluate.add_argument("--regions", nargs="+", metavar="NAME=V1,V2",
                          help="score unions of label values, e.g. WT=1,2,3 TC=2,3 ET=3 (default: each label)")
    evaluate.add_argument("--perturbation", type=float, default=0.0,
                          help="extreme-point models: jitter the simulated points by up to this many voxels")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    evaluate.add_argument("--interactive", action="store_true",
                          help="run the CVPR 2025 interactive protocol (first prompt, then error-component clicks) "
                               "on a deepgrow model; writes interactive.csv, summary.json and "
                               "dice_per_interaction.png")
    evaluate.add_argument("--variants", nargs="+", default=["box"],
                          choices=["box", "challenge_box", "clicks", "extreme_points"],
                          help="with --interactive: first prompts to run (default: box, a 2D box on the largest "
                               "axial slice)")
    evaluate.add_argument("--clicks", type=int, default=5, help="with --interactive: corrective clicks (default 5)")
    evaluate.add_argument("--max-objects", type=int, default=None,
                          help="with --interactive: first N objects of each datalist only (a subset)")
    evaluate.add_argument("--structures", nargs="+", default=None,
                          help="with --interactive: only these structures of the datalists (e.g. rv myo lv)")
    evaluate.add_argument("-o", "--output", required=True, help="report folder")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                          help="with --config: where the model runs (default: the config's device)")
    evaluate.add_argument("--progress-file", default=None,
                          help="append progress as JSON lines, with a heartbeat (for a job supervisor)")
    evaluate.set_defaults(func=_evaluate)

    pack = sub.add_parser(
        "pack-sources", help="pack an interactive train config's training volumes into one file (to train elsewhere)",
        description="Read the training volumes of an interactive train config's datasets as training does, crop each "
                    "around its labels, quantise its normalised intensities to 8 bits and compress: one file a "
                    "train config names as \"sources_pack\" on a machine without the datasets (a rented GPU).")
    pack.add_argument("--train-config", required=True, help="interactive train config whose datasets to pack")
    pack.add_argument("-o", "--output", required=True, help="the pack to write (.npz)")
    pack.add_argument("--fraction", type=float, default=0.5,
                      help="crop: fraction of the labels' extent kept on each side (default 0.5)")
    pack.add_argument("--margin-mm", type=float, default=30.0,
                      help="crop: millimetres kept on each side beyond that (default 30)")
    pack.set_defaults(func=_pack_sources)

    supervoxels = sub.add_parser(
        "supervoxels", help="self-supervised training objects: merged SLIC supervoxels of datalists' training images",
        description="Cut every training image of the interactive datalists into intensity-homogeneous regions "
                    "(SLIC supervoxels merged across weak edges), one label map per image and threshold, and write "
                    "them with an interactive datalist (OUTPUT/supervoxels.json) a train config can name.")
    supervoxels.add_argument("--datalist", action="append", required=True, help="interactive datalist (repeatable)")
    supervoxels.add_argument("--max-cases", type=int, default=None, help="first N training cases of each datalist")
    supervoxels.add_argument("--thresholds", type=float, nargs="+", default=None,
                             help="merge thresholds (scaled intensity, 0..1; one label map each; default 0.03 0.06)")
    supervoxels.add_argument("-o", "--output", required=True, help="output folder")
    supervoxels.set_defaults(func=_supervoxels)

    shapes = sub.add_parser(
        "synthetic-shapes", help="synthetic training objects: hollow and thin shapes painted into training images",
        description="Paint rings, open rings, shells and tubes (each a wall around an interior of another intensity, "
                    "in the image's own intensities) into every training image of the interactive datalists, and "
                    "write the painted images and label maps with an interactive datalist "
                    "(OUTPUT/synthetic_shapes.json; structures wall_N, interior_N, whole_N) a train config can name.")
    shapes.add_argument("--datalist", action="append", required=True, help="interactive datalist (repeatable)")
    shapes.add_argument("--max-cases", type=int, default=None, help="first N training cases of each datalist")
    shapes.add_argument("--copies", type=_at_least_one, default=2, help="painted versions of each image (default 2)")
    shapes.add_argument("--objects", type=_at_least_one, default=4, help="shapes per painted image (default 4)")
    shapes.add_argument("-o", "--output", required=True, help="output folder")
    shapes.set_defaults(func=_synthetic_shapes)
