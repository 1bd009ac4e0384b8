"""`npuyolo deploy bundle`: a torch-free package that runs a deployment plan's chosen artefact on a board.

`build.py` writes it (the artefact, the runner and C post-processor from `templates/`, manifest.json, a README for
the board); `manifest.py` holds the manifest's typed records. Choosing the artefact from a run's recorded plan is the
service's job (`npuyolo.services.bundle_model`); this room only needs an artefact.
"""

from npuyolo.deploy.bundle.build import Artefact, Bundle, BundleError, build_bundle, inspect_artefact
from npuyolo.deploy.bundle.manifest import FORMAT, BundleManifest, InputSpec, OutputSpec, PlanFigures, manifest_checksum

__all__ = ["FORMAT", "Artefact", "Bundle", "BundleError", "BundleManifest", "InputSpec", "OutputSpec", "PlanFigures",
           "build_bundle", "inspect_artefact", "manifest_checksum"]
