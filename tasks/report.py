"""What a person sees of a stage run: status, time, the key figures, where the artifact is."""

from schemas.manifest import Manifest
from schemas.stages import STAGES


def summary(stage: str, status: str, manifest: Manifest, seconds: float, path) -> dict:
    return {
        "stage": stage,
        "status": status,
        "seconds": round(seconds, 1),
        "figures": STAGES[stage].figures(manifest.stats),  # each stage's own (schemas/<stage>.py)
        "fingerprint": manifest.fingerprint[:12],
        "path": str(path),
    }
