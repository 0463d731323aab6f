"""``descend predict``, ``descend evaluate`` and ``descend export``: use a trained run (or ensemble) on new data,
or write it for serving."""

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
    export = sub.add_parser("export", help="write a trained run as an ONNX, TorchScript or torch.export model "
                                           "(raw inputs in, scaling folded in), checked against PyTorch first")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run or ensemble directory (runs/<name>)")
    export.add_argument("--format", choices=("onnx", "torchscript", "exported"), default="onnx",
                        help="onnx (default; runs in onnxruntime), torchscript, or exported (torch.export, .pt2)")
    export.add_argument("--out", help="the file to write (default: model.onnx, model.torchscript.pt or model.pt2 "
                                      "in the run directory)")
    export.add_argument("--tolerance", type=float, default=1e-4, metavar="T",
                        help="largest difference from the PyTorch model allowed, times max(1, |largest output|)")
    for command in (predict, evaluate, export):
        command.add_argument("--which", choices=("final", "best", "last"), default="final",
                             help="which weights: final (default), the best epoch's checkpoint, or the last one")
        command.add_argument("--allow-code", action="store_true",
                             help="the run's recipe names a model factory of your code: import it (only for runs "
                                  "you trust; without this flag nothing is imported)")


def _predict(args) -> int:
    from .. import atomic
    from ..runs.loaded import load_run, predictions_csv

    text = predictions_csv(load_run(args.run_dir, args.which, allow_code=args.allow_code), args.input, proba=args.proba)
    if args.out:
        atomic.write_text(args.out, text, what="predictions")
        print(f"{text.count(chr(10)) - 1} predictions -> {args.out}")
    else:
        print(text, end="")
    return 0


def _evaluate(args) -> int:
    from ..runs.loaded import load_run

    for key, value in load_run(args.run_dir, args.which, allow_code=args.allow_code).evaluate(args.data).items():
        print(f"{key} {value:.6g}")
    return 0


def _export(args) -> int:
    from ..runs.loaded import load_run

    run = load_run(args.run_dir, args.which, allow_code=args.allow_code)
    print(f"exported {run.export(args.out, args.format, tolerance=args.tolerance)}")
    return 0


COMMANDS = {"predict": _predict, "evaluate": _evaluate, "export": _export}
