"""`deploy plan`: for each NPU target, every artefact that could serve it, verified, then chosen.

The advice a report used to print was inferred from rules ("rewrite LeakyReLU, then it all runs on the NPU"). A plan
builds each candidate and measures it instead: placement on the profile (and the vendor compiler when installed),
FP32 and INT8 accuracy on val, and the same at the confidence threshold an NPU runtime bakes in.

The room, top to bottom: `series.py` (a series' members planned, the variant x target matrix), `build.py`
(`build_plan` and its `PlanBuilder`: export, rewrite, quantize, evaluate, compile, at the edge), `work.py` (the INT8
files and scores, in worker processes, kept by content key), `choose.py` (the pure core: `candidates()` says what to
build for a target, `rank()` chooses among verified rows, `target_advice()` says what the numbers imply),
`recorded.py` (a plan.json read back, validated), `records.py` (the rows and the plan's constants). What the rest of
npuyolo uses is re-exported here.
"""

from npuyolo.deploy.plan.build import PlanBuilder, build_plan, leaky_slopes, model_folder, weights_note, write_graph
from npuyolo.deploy.plan.choose import (AXES, AccuracyNoise, Plan, TargetPlan, allowed_slopes, candidates, dominates,
                                        int8_routes, lost_on, lost_text, rank, retrain_advised, sort_keys, target_advice,
                                        target_notes, why_lost)
from npuyolo.deploy.plan.recorded import MAX_PLAN_BYTES, RecordedPlan, load_recorded_plan
from npuyolo.deploy.plan.records import (ACCURACY_GUARD_PP, COMPILER_OF, DEPLOY_CONF, MOSTLY_ON_NPU, PLAN_BOOTSTRAP,
                                         RETRAIN_ABOVE_PP, REWRITES, VELA_U55_REWRITE_COST, Accuracy, Advice, Candidate,
                                         Placement, PlanError, Row, VendorInt8)
from npuyolo.deploy.plan.series import SeriesPlan, build_series_plan, cell, chosen_row, matrix

__all__ = ["ACCURACY_GUARD_PP", "AXES", "COMPILER_OF", "DEPLOY_CONF", "MAX_PLAN_BYTES", "MOSTLY_ON_NPU", "PLAN_BOOTSTRAP",
           "RETRAIN_ABOVE_PP", "REWRITES", "VELA_U55_REWRITE_COST", "Accuracy", "AccuracyNoise", "Advice", "Candidate",
           "Placement", "Plan", "PlanBuilder", "PlanError", "RecordedPlan", "Row", "SeriesPlan", "TargetPlan",
           "VendorInt8", "allowed_slopes", "build_plan", "build_series_plan", "candidates", "cell", "chosen_row",
           "dominates", "int8_routes", "leaky_slopes", "load_recorded_plan", "lost_on", "lost_text", "matrix",
           "model_folder", "rank", "retrain_advised", "sort_keys", "target_advice", "target_notes", "weights_note",
           "why_lost", "write_graph"]
