"""Classify new images with a trained model: a table, a CSV and a contact sheet.

    python apps/predict.py --model runs/cats/models/<run>.keras ../shared/data/photos/cat.png photos/ --top-k 3
    python apps/predict.py --model runs/cats ../shared/data/photos      # an out folder: the model it kept best
    python apps/predict.py --model model.tflite photos/                 # a TFLite export (its .json beside it)
    python apps/predict.py --model runs/cats --export model.tflite [--int8 --calibration <image folder>]

--model is a .keras file saved by a keras_l2t run (it carries its class names, input size and preprocessing),
its TFLite export, or a comparison's output folder, whose summary's best-validation model is used. Writes
predictions.csv and contact_sheet.png beside --out (default: the current folder).
"""

import argparse
import sys

from keras_l2t import process


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras / .tflite file, or a compare_strategies --out")
    parser.add_argument("images", nargs="*", help="image files and folders")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--out", default=".", help="folder for predictions.csv and contact_sheet.png")
    parser.add_argument("--export", help="write the model as .tflite (a file) or a SavedModel (a folder)")
    parser.add_argument("--int8", action="store_true", help="an int8 TFLite model (needs --calibration)")
    parser.add_argument("--calibration", help="a folder of training images for --int8 (a few hundred)")
    return parser.parse_args(argv)


def message(error: Exception) -> str:
    """One line for an error: an OS error's reason and file (not its bare number), else the error's text."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def main(argv=None) -> int:
    process.configure()  # oneDNN CPU kernels on, before TensorFlow loads (see keras_l2t.process)
    args = parse(argv)
    try:
        return run(args)
    except (OSError, ValueError, KeyError) as error:  # the library's errors say what to do; one line, exit 2
        print(f"error: {message(error)}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Export the model and classify the images as the arguments say; 0 when done."""
    import os

    from keras_l2t import inference

    model_path = inference.resolve_model(args.model)
    if args.export:
        inference.export_file(model_path, args.export, int8=args.int8, calibration=args.calibration)
        print(f"exported {model_path} to {args.export}")
    if not args.images:
        return 0
    rows = inference.predict(model_path, args.images, top_k=args.top_k)
    os.makedirs(args.out, exist_ok=True)
    print(f"model: {model_path}")
    width = max(len(os.path.basename(row["file"])) for row in rows)
    for row in rows:
        ranked = "  ".join(f"{name} {100 * probability:5.1f} %" for name, probability in row["top"])
        print(f"{os.path.basename(row['file']):<{width}}  {ranked}")
    csv_path = inference.write_csv(rows, os.path.join(args.out, "predictions.csv"))
    sheet = inference.contact_sheet(rows, os.path.join(args.out, "contact_sheet.png"))
    print(f"wrote {csv_path} and {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
