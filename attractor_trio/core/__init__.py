"""Sans-IO decision logic: outcomes, edge selection, routing, goal gates, retries, failure
classes and context fidelity. No trio, no files — plain functions over frozen values, so the
engine only executes decisions and every rule is testable (and fuzzable) without an event loop.
"""

from .edges import SELECTION_METHODS as SELECTION_METHODS
from .edges import EdgeChoice as EdgeChoice
from .edges import best_by_weight_then_lexical as best_by_weight_then_lexical
from .edges import normalize_label as normalize_label
from .edges import select_edge as select_edge
from .failures import BUDGET_EXHAUSTED as BUDGET_EXHAUSTED
from .failures import CANCELED as CANCELED
from .failures import DETERMINISTIC as DETERMINISTIC
from .failures import FAILURE_CLASSES as FAILURE_CLASSES
from .failures import RETRY_BLOCKING_CLASSES as RETRY_BLOCKING_CLASSES
from .failures import STRUCTURAL as STRUCTURAL
from .failures import TRANSIENT_INFRA as TRANSIENT_INFRA
from .failures import is_retry_blocked as is_retry_blocked
from .failures import normalize_failure_class as normalize_failure_class
from .fidelity import DEFAULT_FIDELITY as DEFAULT_FIDELITY
from .fidelity import FIDELITY_MODES as FIDELITY_MODES
from .fidelity import build_preamble as build_preamble
from .fidelity import resolve_fidelity as resolve_fidelity
from .fidelity import resolve_thread_key as resolve_thread_key
from .goals import GateCheck as GateCheck
from .goals import check_goal_gates as check_goal_gates
from .goals import goal_gate_retry_target as goal_gate_retry_target
from .outcome import CONTEXT_OUTCOME_KEYS as CONTEXT_OUTCOME_KEYS
from .outcome import Outcome as Outcome
from .outcome import StageStatus as StageStatus
from .outcome import StatusFileError as StatusFileError
from .outcome import context_updates_after as context_updates_after
from .outcome import is_success_like as is_success_like
from .outcome import passthrough_outcome as passthrough_outcome
from .outcome import satisfies_goal_gate as satisfies_goal_gate
from .retry import DEFAULT_PRESET as DEFAULT_PRESET
from .retry import PRESETS as PRESETS
from .retry import BackoffConfig as BackoffConfig
from .retry import Blocked as Blocked
from .retry import Done as Done
from .retry import Exhausted as Exhausted
from .retry import Retry as Retry
from .retry import RetryDecision as RetryDecision
from .retry import RetryPolicy as RetryPolicy
from .retry import after_attempt as after_attempt
from .retry import delay_for_attempt as delay_for_attempt
from .retry import policy_for as policy_for
from .retry import preset_named as preset_named
from .routing import Advance as Advance
from .routing import Stop as Stop
from .routing import route as route
from .vocabulary import DEFAULT_KILL_GRACE as DEFAULT_KILL_GRACE
from .vocabulary import CancelCause as CancelCause
from .vocabulary import ExitPath as ExitPath
from .vocabulary import FailureClass as FailureClass
from .vocabulary import Status as Status
