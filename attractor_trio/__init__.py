"""attractor-trio: run Attractor pipelines on Trio.

The public API is re-exported here explicitly (``from .x import y as y``); everything else
is private and may change. ``tests/test_exports.py`` keeps this list honest.
"""

from ._version import __version__ as __version__
from .api import RunController as RunController
from .api import open_run as open_run
from .context import Context as Context
from .core.outcome import Outcome as Outcome
from .core.outcome import StageStatus as StageStatus
from .engine import RunHandle as RunHandle
from .engine import RunResult as RunResult
from .engine import check_runnable as check_runnable
from .engine import register_handler as register_handler
from .engine import resume as resume
from .engine import run as run
from .errors import AttractorError as AttractorError
from .errors import ConfigError as ConfigError
from .errors import DotSyntaxError as DotSyntaxError
from .errors import LogsRootInUseError as LogsRootInUseError
from .errors import ValidationError as ValidationError
from .errors import ValidationFailed as ValidationFailed
from .graph import Diagnostic as Diagnostic
from .graph import Edge as Edge
from .graph import Graph as Graph
from .graph import Node as Node
from .graph import Severity as Severity
from .handlers.base import AttemptInfo as AttemptInfo
from .handlers.base import Handler as Handler
from .handlers.base import current_attempt as current_attempt
from .interviewers import Answer as Answer
from .interviewers import AnswerValue as AnswerValue
from .interviewers import AutoApproveInterviewer as AutoApproveInterviewer
from .interviewers import CallbackInterviewer as CallbackInterviewer
from .interviewers import ConsoleInterviewer as ConsoleInterviewer
from .interviewers import Interviewer as Interviewer
from .interviewers import Option as Option
from .interviewers import Question as Question
from .interviewers import QuestionType as QuestionType
from .interviewers import QueueInterviewer as QueueInterviewer
from .interviewers import RecordingInterviewer as RecordingInterviewer
from .pipeline import load as load
from .pipeline import prepare_pipeline as prepare_pipeline
from .providers.base import CodergenBackend as CodergenBackend
from .providers.simulate import SimulationBackend as SimulationBackend
from .providers.simulate import load_sim_script as load_sim_script
from .transforms import Transform as Transform
from .transforms import register_transform as register_transform
from .typed_events import Event as Event
from .validate import LintRule as LintRule
from .validate import register_rule as register_rule
from .validate import validate as validate
from .validate import validate_or_raise as validate_or_raise
from .workspace import WorkspaceConfig as WorkspaceConfig
