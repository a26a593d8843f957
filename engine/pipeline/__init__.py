"""The stage contract, the registry capabilities add their stages to, ordering, keys and the runner."""

from centile.pipeline.stage import (
    STAGES,
    Context,
    Stage,
    StageSkipped,
    register_stage,
    stages,
)

__all__ = ["STAGES", "Context", "Stage", "StageSkipped", "register_stage", "stages"]
