"""Networks from other tools: ``nmflow import`` reads a QONNX graph (Brevitas's export, FINN's
files) into a run folder's hardware model, checked against the graph's own execution.

After the import the run folder is like one ``export`` wrote: ``verilog``, ``sim``, ``compare``,
``build`` and ``host`` take it as they are. The dataset named at the import is the model's test
split; its raw values go through the graph's input Quant to become the engine's integers (the
model records the Quant), so ``sim`` and ``compare`` feed the engine what the graph computes on.
"""

import hashlib
from pathlib import Path


from ..errors import NmflowError
from ..fileio import staged_outputs, write_json
from .engine import ARTIFACTS, DatasetSpec, _resolve, load_dataset

__all__ = ["import_step"]


def import_step(run_dir, onnx_file, spec=None, *, out=None):
    """Import ``onnx_file`` into ``run_dir``: ``hwmodel.{npz,json}`` and ``golden.json``, both or
    neither. The integer model is run by nmflow's reference and the graph by qonnx on the test
    split of ``spec`` (digits by default); every class and every output must be equal, or the
    import is refused in one line naming the first image that differs. Returns the golden dict
    (``float_accuracy`` is the graph's accuracy)."""
    from ..golden import hwmodel
    from ..golden.qonnx import check_import, import_qonnx

    run_dir = Path(run_dir)
    spec = spec or DatasetSpec()
    _resolve(spec)
    onnx_file = Path(onnx_file)
    model = import_qonnx(onnx_file)
    dataset = load_dataset(spec)
    if dataset.x_test.shape[1] != model.n_inputs:
        raise NmflowError(f"dataset {dataset.name} has {dataset.x_test.shape[1]} inputs per "
                          f"image; the graph takes {model.n_inputs}")
    if model.n_classes < int(dataset.y_test.max()) + 1:
        raise NmflowError(f"the graph gives {model.n_classes} scores; dataset {dataset.name} "
                          f"has {int(dataset.y_test.max()) + 1} classes")
    check = check_import(onnx_file, model, dataset.x_test)
    if check["class_mismatches"] or check["score_mismatches"]:
        raise NmflowError(
            f"the imported model differs from the graph's execution on {dataset.name} test "
            f"images: {check['class_mismatches']} classes and {check['score_mismatches']} "
            f"score rows of {check['images']}, first at image {check['first_mismatch']}")
    meta = dict(model.meta)
    meta["import"] = dict(meta["import"], source=str(onnx_file.resolve()),
                          sha256=hashlib.sha256(onnx_file.read_bytes()).hexdigest())
    meta["dataset_source"] = spec.to_dict()
    model = hwmodel.HardwareModel(input_bits=model.input_bits, weight_kind=model.weight_kind,
                                  layers=model.layers, score_frac_bits=model.score_frac_bits,
                                  meta=meta)
    y = dataset.y_test
    out = Path(out or run_dir / ARTIFACTS["hwmodel"])
    golden = {
        "dataset": dataset.name, "test_images": int(len(y)), "weight_kind": model.weight_kind,
        "sizes": model.sizes, "source": "qonnx",
        "float_accuracy": float((check["onnx_classes"] == y).mean()),
        "int_accuracy": float((check["classes"] == y).mean()),
        "agreement": float((check["classes"] == check["onnx_classes"]).mean()),
        "onnx_class_mismatches": check["class_mismatches"],
        "onnx_score_mismatches": check["score_mismatches"],
        "onnx_scores_compared": "==" if check["exact_scores_compared"] else
        "within float32 rounding (the graph's scales are not powers of two)",
        "onnx_score_max_error": check["score_max_error"],
        "exact_scores": bool(meta["import"]["exact_scores"]),
        "input_scale": meta["import"]["input_scale"],
        "hwmodel": str(out.with_suffix(".json")),
    }
    with staged_outputs() as outputs:
        hwmodel.save(model, outputs.folder(out.parent) / out.name)
        write_json(outputs.file(run_dir / ARTIFACTS["golden"]), golden)
    return golden
