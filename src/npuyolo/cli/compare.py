"""`npuyolo compare`: is the difference real? Models scored on one data set, each pair with its paired interval; a thin
translation of `npuyolo.services.comparison`."""


from pathlib import Path
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, app, err, option, print_json, quiet_stdout, user_errors
from npuyolo.cli.tables import print_comparison
from npuyolo.services.options import CompareOptions


@app.command("compare")
@user_errors
def compare(models: Annotated[list[str], typer.Argument(help="Two or more models: run ids or names, .pt checkpoints, ONNX files "
                                                                 "npuyolo wrote, or models `npu compile` built (.rknn, Vela's int8 .tflite).")],
            data: Annotated[Path, typer.Option(help="data.yaml; its val split is scored, the same images for every model.")],
            bootstrap: Annotated[int, option(CompareOptions, "bootstrap")] = CompareOptions.bootstrap,
            seed: Annotated[int, option(CompareOptions, "seed")] = CompareOptions.seed,
            plot: Annotated[Optional[Path], option(CompareOptions, "plot")] = CompareOptions.plot,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """mAP50, mAP50-95, P and R of each model with 95% intervals; each pair's difference with its paired-bootstrap
    interval and a verdict: ahead, or tied within noise. Statistics are kept, so a second comparison runs no model."""
    from npuyolo.services import comparison

    options = CompareOptions(bootstrap=bootstrap, seed=seed, plot=plot)
    with quiet_stdout(as_json), err.status("scoring...") as status:
        result = comparison.compare(registry, models, data, options, progress=lambda msg: status.update(msg))
    if result.note:  # what was not kept (a read-only registry): one line, beside the answer
        err.print(f"note: {result.note}", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        return print_json(result.as_dict())
    print_comparison(result)
