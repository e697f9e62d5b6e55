"""attractor-trio: run Attractor pipelines on Trio.

The public API is re-exported here explicitly (``from .x import y as y``); everything else
is private and may change. ``tests/test_exports.py`` keeps this list honest.
"""

from ._version import __version__ as __version__
from .api import RunController as RunController
from .api import open_run as open_run
from .backends.simulate import SimulationBackend as SimulationBackend
from .backends.simulate import load_sim_script as load_sim_script
from .context import Context as Context
from .core.outcome import Outcome as Outcome
from .core.outcome import StageStatus as StageStatus
from .dot.graph import Diagnostic as Diagnostic
from .dot.graph import Edge as Edge
from .dot.graph import Graph as Graph
from .dot.graph import Node as Node
from .dot.graph import Severity as Severity
from .dot.pipeline import load as load
from .dot.pipeline import prepare_pipeline as prepare_pipeline
from .dot.transforms import Transform as Transform
from .dot.transforms import register_transform as register_transform
from .dot.validate import LintRule as LintRule
from .dot.validate import register_rule as register_rule
from .dot.validate import validate as validate
from .dot.validate import validate_or_raise as validate_or_raise
from .errors import AttractorError as AttractorError
from .errors import ConfigError as ConfigError
from .errors import DotSyntaxError as DotSyntaxError
from .errors import LogsRootInUseError as LogsRootInUseError
from .errors import ValidationError as ValidationError
from .errors import ValidationFailed as ValidationFailed
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
from .observe.typed_events import Event as Event
from .providers.base import CodergenBackend as CodergenBackend
from .scopes.engine import RunHandle as RunHandle
from .scopes.engine import RunResult as RunResult
from .scopes.engine import check_runnable as check_runnable
from .scopes.engine import register_handler as register_handler
from .scopes.engine import resume as resume
from .scopes.engine import run as run
from .workspace import WorkspaceConfig as WorkspaceConfig
