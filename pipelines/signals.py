"""Events other parts of the portal listen to (notifications), sent after commit."""

from django.dispatch import Signal

# sender=PipelineRun class, run=PipelineRun
run_finished = Signal()
# sender=StageRun class, stage=StageRun (an approve_plan stage now waiting)
approval_needed = Signal()
