"""``descend predict`` and ``descend evaluate``: use a trained run (or ensemble) on new data."""

from __future__ import annotations


def add_parsers(sub) -> None:
    predict = sub.add_parser("predict", help="predict with a trained run (or ensemble) on new raw inputs")
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a run or ensemble directory (runs/<name>)")
    predict.add_argument("input", metavar="INPUT", help="a .csv (the label column may be absent) or .npz file")
    predict.add_argument("--out", help="write the predictions to this CSV file (default: print them)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class")
    evaluate = sub.add_parser("evaluate", help="loss and metrics of a trained run (or ensemble) on labelled data")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run or ensemble directory (runs/<name>)")
    evaluate.add_argument("--data", metavar="NAME_OR_PATH",
                          help="a labelled .csv/.npz file or a dataset name (default: the run's own test split)")
    for command in (predict, evaluate):
        command.add_argument("--which", choices=("final", "best", "last"), default="final",
                             help="which weights: final (default), the best epoch's checkpoint, or the last one")


def _predict(args) -> int:
    from .. import atomic
    from ..inference import load_run, predictions_csv

    text = predictions_csv(load_run(args.run_dir, args.which), args.input, proba=args.proba)
    if args.out:
        atomic.write_text(args.out, text, what="predictions")
        print(f"{text.count(chr(10)) - 1} predictions -> {args.out}")
    else:
        print(text, end="")
    return 0


def _evaluate(args) -> int:
    from ..inference import load_run

    for key, value in load_run(args.run_dir, args.which).evaluate(args.data).items():
        print(f"{key} {value:.6g}")
    return 0


COMMANDS = {"predict": _predict, "evaluate": _evaluate}
