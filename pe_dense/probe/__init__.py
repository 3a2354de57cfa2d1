"""``pe-dense probe``: the PE paper's frozen-feature table for any PE checkpoint (aligned students
included): ADE20k linear segmentation, NYU depth and DAVIS label propagation, each with the project's own
protocol (docs/protocols.md#the-frozen-feature-probe), resumable per task, beside the published numbers."""

from .plan import ProbePlan, ProbeRequest, plan_probe
from .run import run_probe
from .tasks import TASKS

__all__ = ["TASKS", "ProbePlan", "ProbeRequest", "plan_probe", "run_probe"]
