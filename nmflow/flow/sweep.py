"""The read-error sweep: test accuracy of the integer hardware model against the PCSA read-error
rate, one curve per error type, for a TNN and a BNN (thesis, Fig. 4.9); ``nmflow ber-sweep``
parses its options and calls :func:`run_sweep`.

Every point is :func:`nmflow.golden.bersweep.accuracy_with_errors`: errors drawn afresh for every
test image, averaged over passes with the standard deviation. The BNN has type 1 errors only (its
weights are +-1). The ``chip`` entry is the TNN under the error rates of the device model
(:func:`nmflow.golden.device.chip_rates`) for the two programming conditions of the thesis (100 us
and 1 us pulses); ``table42`` is the TNN under Table 4.2's rates as printed. Points run on a
process pool over the machine's cores.
"""

import csv
import io
import math
import time
from pathlib import Path

from .. import limits
from ..errors import NmflowError, check_int
from ..fileio import make_folder
from ..golden.device import printed_rates
from ..jobs import Job, cluster_address, run_jobs
from .outputs import write_outputs

__all__ = ["run_sweep", "check_rates", "TABLE_42", "CONDITIONS", "CURVES", "DEFAULT_OUT",
           "DEFAULT_HIDDEN"]


DEFAULT_OUT = "build/ber"


#: Hidden layers of the networks the sweep trains. Wider than the demo's 128-128, because on
#: digits a narrow TNN pays for type 3 errors: under the 1 us chip rates (type 3 = 18.7 %) the
#: 128-128 TNN loses 2.5 points, 256-256 1.2 and 512-512 0.7 (means over training seeds 0-2),
#: where the thesis's CIFAR-10 networks lose 0.2 (README, "Device errors").
DEFAULT_HIDDEN = (512, 512)


#: Error types swept per network.
CURVES = {"tnn": ("type1", "type2", "type3"), "bnn": ("type1",)}


#: Thesis Table 4.2 (types 1 and 2 at their stated bounds, < 1e-6 and < 1 %).
CONDITIONS = ("100us", "1us")


TABLE_42 = {condition: printed_rates(condition) for condition in CONDITIONS}


def check_rates(name, rates):
    """``rates`` sorted and without repeats, if each is a fraction in [0, 1] and there is one at
    least; else one-line :class:`~nmflow.errors.NmflowError` naming ``name``."""
    for value in rates:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise NmflowError(f"{name} must be error rates in [0, 1], not {value!r}")
    if not rates:
        raise NmflowError(f"{name} must hold at least one error rate, not none")
    return sorted(set(rates))


def _evaluate(shared, kind, rates, passes, seed):
    """One point of the sweep (a job): ``[mean, std]`` of model ``kind`` under ``rates``.
    ``shared`` is ``(models, inputs per model, labels)``."""
    from ..golden.bersweep import accuracy_with_errors
    from ..golden.readerrors import ErrorRates

    models, inputs, y = shared
    mean, std = accuracy_with_errors(models[kind], inputs[kind], y, ErrorRates(**rates),
                                     passes=passes, seed=seed)
    return [mean, std]


def _model_inputs(model, x):
    """The test inputs as ``model`` takes them: an imported graph's input Quant makes its
    integers of the raw values."""
    if not model.meta.get("import"):
        return x
    from ..golden.qonnx import quantize_inputs
    return quantize_inputs(x, model.meta["import"])


def _load_model(option, path, kind):
    from ..golden import hwmodel
    model = hwmodel.load(path)
    expected = "ternary" if kind == "tnn" else "binary"
    if model.weight_kind != expected:
        raise NmflowError(f"{option} must be a {expected} hardware model, not a "
                          f"{model.weight_kind} one ({str(path)!r})")
    return model


def _chip_rates(samples, seed):
    """The device model's rates per programming condition, as dicts."""
    from ..golden import device
    rates = device.chip_rates(samples=samples, seed=seed)
    return {condition: rates[condition].as_dict() for condition in CONDITIONS}


def _train(out, spec, epochs, hidden, kinds, progress, arch=None):
    """Train and export the networks in ``kinds`` into ``out/<kind>`` (of the layer string
    ``arch`` if given, else of the ``hidden`` sizes); return their models."""
    from ..golden import hwmodel
    from ..golden.train import TrainConfig
    from .engine import ARTIFACTS, export_step, train_step

    models = {}
    for kind in kinds:
        config = (TrainConfig.bnn if kind == "bnn" else TrainConfig.tnn)(
            epochs=epochs, **({"arch": arch} if arch is not None else {"hidden": hidden}))
        run = Path(out) / kind
        train_step(run, config, spec, progress=progress)
        export_step(run)
        models[kind] = hwmodel.load(run / ARTIFACTS["hwmodel"])
    return models


#: Most error rates on one curve.
MAX_RATES = 1_000


def max_jobs():
    """The most worker processes of a sweep: four per usable core."""
    return 4 * limits.usable_cores()


def jobs_rule():
    return f"an integer from 1 to {max_jobs()} (four per usable core)"


def run_sweep(out, *, tnn=None, bnn=None, spec=None, rates=None, passes=5, seed=0, epochs=50,
              hidden=DEFAULT_HIDDEN, limit=None, jobs=None, chip_samples=200_000, progress=None,
              cluster=None, resume=False, arch=None):
    """Run the sweep and write ``out/ber.{json,csv,png}``; return the JSON dict.

    ``tnn`` / ``bnn`` are hardware-model paths (trained into ``out/tnn`` / ``out/bnn`` when
    None); ``spec`` the evaluation dataset (a :class:`~nmflow.flow.DatasetSpec`, digits by
    default); ``rates`` the error rates of each curve (the default log grid when None);
    ``epochs`` and ``hidden`` (hidden layer sizes) configure the networks trained here, or
    ``arch`` (a layer string, convolutions allowed) instead of ``hidden``.
    The points are jobs of :func:`nmflow.jobs.run_jobs` (``jobs`` local processes, or the
    Dask cluster ``cluster``), each written to ``out/.jobs`` as it finishes; ``resume`` keeps
    the networks already trained there and runs only the points missing.
    """
    from .engine import DatasetSpec, load_dataset
    from ..golden.bersweep import rate_grid
    from ..golden.reference import check_inputs

    start = time.monotonic()
    passes = check_int("--passes", passes, 1, limits.PASSES)
    seed = check_int("--seed", seed, 0, limits.SEED)
    epochs = check_int("--epochs", epochs, 1, limits.EPOCHS)
    hidden = limits.check_widths("--hidden", hidden, "256,256")
    chip_samples = check_int("--chip-samples", chip_samples, *limits.PCSA_SAMPLES)
    if limit is not None:
        check_int("--limit", limit, 1, limits.VECTORS)
    jobs = check_int("--jobs", limits.usable_cores() if jobs is None else jobs, 1, max_jobs(),
                     rule=jobs_rule())
    rates = rate_grid() if rates is None else check_rates("--rates", list(rates))
    if len(rates) > MAX_RATES:
        raise NmflowError(f"--rates must hold at most {MAX_RATES} error rates, not {len(rates)}")
    spec = spec or DatasetSpec()
    out = make_folder(out)
    paths = {"tnn": tnn, "bnn": bnn}
    models = {kind: _load_model(f"--{kind}", path, kind)
              for kind, path in paths.items() if path is not None}
    chip_rates = _chip_rates(chip_samples, seed)          # before the long part: fail early
    dataset = load_dataset(spec)
    x, y = dataset.x_test, dataset.y_test
    if limit is not None:
        x, y = x[:limit], y[:limit]
    for kind, model in models.items():
        if model.n_inputs != x.shape[1]:
            raise NmflowError(f"--{kind} model has {model.n_inputs} inputs, the dataset "
                              f"{dataset.name!r} {x.shape[1]} features")
        check_inputs(model, _model_inputs(model, x))
    missing = [kind for kind in CURVES if kind not in models]
    if resume:
        for kind in list(missing):
            path = Path(out) / kind / "hwmodel.json"
            if path.is_file():
                models[kind] = _load_model(f"--{kind}", path, kind)
                missing.remove(kind)
    if missing:
        models.update(_train(out, spec, epochs, hidden, missing, progress, arch))
    train_seconds = time.monotonic() - start

    points = []                                       # (key, rates) in a fixed order
    for kind, types in CURVES.items():
        points.append(((kind, "clean", 0.0), {}))
        points += [((kind, kind_type, rate), {kind_type: rate})
                   for kind_type in types for rate in rates]
    points += [(("tnn", "chip", condition), chip_rates[condition]) for condition in CONDITIONS]
    points += [(("tnn", "table42", condition), TABLE_42[condition]) for condition in CONDITIONS]
    inputs = {kind: _model_inputs(model, x) for kind, model in models.items()}
    counts = {}
    results = run_jobs(
        [Job(key, _evaluate, (key[0], point_rates, passes, seed)) for key, point_rates in points],
        folder=Path(out) / ".jobs", shared=(models, inputs, y), workers=jobs, cluster=cluster,
        resume=resume, progress=progress, what="points", counts=counts)

    result = {kind: {kind_type: [[rate, *results[(kind, kind_type, rate)]] for rate in rates]
                     for kind_type in types} for kind, types in CURVES.items()}
    result["clean"] = {kind: results[(kind, "clean", 0.0)][0] for kind in CURVES}
    result["chip"] = {"clean": result["clean"]["tnn"],
                      **{c: results[("tnn", "chip", c)][0] for c in CONDITIONS}}
    result["chip_std"] = {c: results[("tnn", "chip", c)][1] for c in CONDITIONS}
    result["chip_rates"] = chip_rates
    result["table42"] = {c: {"rates": TABLE_42[c], "mean": results[("tnn", "table42", c)][0],
                             "std": results[("tnn", "table42", c)][1]} for c in CONDITIONS}
    result["settings"] = {
        "passes": passes, "seed": seed, "epochs": epochs, "hidden": list(hidden), "arch": arch,
        "rates": rates,
        "test_images": int(len(y)),
        "dataset": spec.to_dict(), "chip_samples": chip_samples,
        "models": {kind: {"sizes": models[kind].sizes, "weight_kind": models[kind].weight_kind,
                          "path": str(paths[kind] or Path(kind) / "hwmodel.json")}
                   for kind in CURVES},
        "std": "sample standard deviation over passes (ddof=1; 0 for one pass)",
        "accuracy": "fraction of the test images classified right",
    }
    # where and how long it ran: beside the results, which do not depend on it
    run = {"jobs": jobs, "cluster": cluster_address(cluster), "points_run": counts["ran"],
           "points_resumed": counts["reused"], "train_seconds": round(train_seconds, 2),
           "seconds": round(time.monotonic() - start, 2)}
    write_outputs(out, {"ber.json": result, "ber.csv": _csv(result), "ber.png": _png(result),
                        "ber_run.json": run})
    return dict(result, run=run)


def _csv(result):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "curve", "type1", "type2", "type3", "mean_accuracy",
                     "std_accuracy"])
    for kind, types in CURVES.items():
        writer.writerow([kind, "clean", 0, 0, 0, result["clean"][kind], 0])
        for kind_type in types:
            for rate, mean, std in result[kind][kind_type]:
                row = {"type1": 0, "type2": 0, "type3": 0, kind_type: rate}
                writer.writerow([kind, kind_type, row["type1"], row["type2"], row["type3"],
                                 mean, std])
    for condition in CONDITIONS:
        r = result["chip_rates"][condition]
        writer.writerow(["tnn", f"chip {condition}", r["type1"], r["type2"], r["type3"],
                         result["chip"][condition], result["chip_std"][condition]])
    for condition in CONDITIONS:
        entry = result["table42"][condition]
        r = entry["rates"]
        writer.writerow(["tnn", f"table 4.2 {condition}", r["type1"], r["type2"], r["type3"],
                         entry["mean"], entry["std"]])
    return buffer.getvalue()


def _png(result):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = {"type1": "tab:red", "type2": "tab:orange", "type3": "tab:blue"}
    for kind, types in CURVES.items():
        for kind_type in types:
            curve = [point for point in result[kind][kind_type] if point[0] > 0]
            if not curve:
                continue
            rate, mean, std = zip(*curve)
            axes.errorbar(rate, [100 * m for m in mean], yerr=[100 * s for s in std],
                          color=colors[kind_type], linestyle="-" if kind == "tnn" else "--",
                          marker="o" if kind == "tnn" else "s", markersize=3, capsize=2,
                          label=f"{kind.upper()} {kind_type.replace('type', 'type ')}")
    for kind, style in (("tnn", ":"), ("bnn", "-.")):
        axes.axhline(100 * result["clean"][kind], color="gray", linestyle=style, linewidth=0.8,
                     label=f"{kind.upper()} without errors")
    axes.set_xscale("log")
    axes.set_xlabel("bit error rate (per read of an eligible weight)")
    axes.set_ylabel("test accuracy (%)")
    chip = result["chip"]
    axes.set_title(f"Accuracy vs read errors; TNN on the chip model: "
                   f"{100 * chip['100us']:.1f}% (100 us), {100 * chip['1us']:.1f}% (1 us)",
                   fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
