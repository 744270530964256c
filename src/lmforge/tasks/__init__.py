"""Tasks: what a recipe's ``task:`` names, one file per task over one small protocol.

``base`` holds the protocol (:class:`Task`), the :class:`RunContext` a task runs in and the
:class:`TaskOutput` it returns; ``run`` holds the registry of tasks (:data:`TASKS`), the one
dispatch (:func:`run_recipe`) and the steps every task shares (lmforge.json, model card,
registration, compression); ``promote`` the promotion that first checks the version loads
(:func:`promote_version`, for ``lmforge models promote`` and the server). See
docs/architecture.md, "Adding a task".
"""

from lmforge.tasks.base import (
    BaselineCheck,
    BelowBaselineError,
    Report,
    ReportLine,
    ReportTable,
    RunContext,
    Task,
    TaskOutput,
)
from lmforge.tasks.promote import check_version, promote_version
from lmforge.tasks.run import TASKS, RunResult, run_recipe

__all__ = [
    "TASKS",
    "BaselineCheck",
    "BelowBaselineError",
    "Report",
    "ReportLine",
    "ReportTable",
    "RunContext",
    "RunResult",
    "Task",
    "TaskOutput",
    "check_version",
    "promote_version",
    "run_recipe",
]
