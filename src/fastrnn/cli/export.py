"""``fastrnn export``: a saved task model as an ONNX graph."""

from .common import CLIError, library_call, load_model


def add_parser(commands):
    export = commands.add_parser(
        "export", help="write a saved model as ONNX",
        description="Write a model saved by `fastrnn train` or model.save as an ONNX "
                    "graph (needs the onnx package: pip install fastrnn[onnx]). Inputs: "
                    "ids (int64, batch x time, padded with 0) or features (float32, "
                    "batch x time x F) and lengths (int64, batch); output probabilities "
                    "or values. The vocabulary, labels and settings are in the graph's "
                    "metadata_props. Seq2Seq models cannot be exported (decoding is a "
                    "loop kept in Python).")
    export.add_argument("model", metavar="MODEL", help="a saved model (.npz)")
    export.add_argument("-o", "--output", required=True, metavar="PATH",
                        help="the ONNX file to write (replaced atomically)")
    export.set_defaults(func=export_command)


def export_command(args):
    model, task = load_model(args.model)
    if task == "seq2seq":
        from ..tasks.onnx_export import SEQ2SEQ_REASON
        raise CLIError(SEQ2SEQ_REASON)
    try:
        with library_call(f"cannot export {args.model}"):
            graph = model.to_onnx(args.output)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    inputs = ", ".join(value.name for value in graph.graph.input)
    outputs = ", ".join(value.name for value in graph.graph.output)
    print(f"Wrote {args.output}: {type(model).__name__} as ONNX (inputs {inputs}; "
          f"output {outputs})")
    return 0
