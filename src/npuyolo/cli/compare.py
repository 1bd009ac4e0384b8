"""`npuyolo compare`: is the difference real? Models scored on one data set, each pair with its paired interval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, app, err, print_json, quiet_stdout, user_errors
from npuyolo.cli.tables import print_comparison


@app.command("compare")
@user_errors
def compare(models: Annotated[list[str], typer.Argument(help="Two or more models: run ids or names, .pt checkpoints, ONNX files "
                                                                 "npuyolo wrote, or models `npu compile` built (.rknn, Vela's int8 .tflite).")],
            data: Annotated[Path, typer.Option(help="data.yaml; its val split is scored, the same images for every model.")],
            bootstrap: Annotated[int, typer.Option(help="Paired resamples of the val images.")] = 1000,
            seed: Annotated[int, typer.Option(help="Seed of the resamples (the same seed, the same intervals).")] = 0,
            plot: Annotated[Optional[Path], typer.Option(help="Forest plot of the mAP50 differences (PNG) [default: under the registry's folder].")] = None,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """mAP50, mAP50-95, P and R of each model with 95% intervals; each pair's difference with its paired-bootstrap
    interval and a verdict: ahead, or tied within noise. Statistics are kept, so a second comparison runs no model."""
    from npuyolo.deploy.eval.compare import compare_registry
    from npuyolo.services import compare as compare_service

    with quiet_stdout(as_json), err.status("scoring...") as status:
        result = compare_service(compare_registry(registry), models, data, bootstrap=bootstrap, seed=seed, plot=plot,
                                 progress=lambda msg: status.update(msg))
    if result.note:  # what was not kept (a read-only registry): one line, beside the answer
        err.print(f"note: {result.note}", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        return print_json(result.as_dict())
    print_comparison(result)
