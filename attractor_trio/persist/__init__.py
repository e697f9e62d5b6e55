"""Run-directory persistence (contract.md §2, §4, §9): small synchronous IO functions.

Every JSON file goes through :func:`write_json_atomic`; the trio engine calls these directly or
via ``trio.to_thread.run_sync``. Nothing here decides routing or outcomes.
"""

from .artifacts import FILE_BACKING_THRESHOLD as FILE_BACKING_THRESHOLD
from .artifacts import ArtifactInfo as ArtifactInfo
from .artifacts import ArtifactNotFoundError as ArtifactNotFoundError
from .artifacts import ArtifactStore as ArtifactStore
from .atomic import CorruptFileError as CorruptFileError
from .atomic import cleanup_temp_files as cleanup_temp_files
from .atomic import read_json as read_json
from .atomic import utc_timestamp as utc_timestamp
from .atomic import write_json_atomic as write_json_atomic
from .atomic import write_text_atomic as write_text_atomic
from .checkpoint import CHECKPOINT_FILE_NAME as CHECKPOINT_FILE_NAME
from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .final import EXIT_PATHS as EXIT_PATHS
from .final import FAILURE_CLASSES as FAILURE_CLASSES
from .final import FINAL_FILE_NAME as FINAL_FILE_NAME
from .final import FINAL_STATUSES as FINAL_STATUSES
from .final import FinalAlreadyWrittenError as FinalAlreadyWrittenError
from .final import FinalRecord as FinalRecord
from .final import read_final as read_final
from .final import write_final as write_final
from .live import LIVE_FILE_NAME as LIVE_FILE_NAME
from .live import LIVE_STATES as LIVE_STATES
from .live import LiveWriter as LiveWriter
from .live import read_live as read_live
from .lock import LOCK_FILE_NAME as LOCK_FILE_NAME
from .lock import RunLock as RunLock
from .lock import RunLockedError as RunLockedError
from .lock import RunLockInfo as RunLockInfo
from .lock import acquire_run_lock as acquire_run_lock
from .lock import is_pid_alive as is_pid_alive
from .lock import read_run_lock as read_run_lock
from .manifest import GRAPH_FILE_NAME as GRAPH_FILE_NAME
from .manifest import MANIFEST_FILE_NAME as MANIFEST_FILE_NAME
from .manifest import Manifest as Manifest
from .manifest import dot_sha256 as dot_sha256
from .manifest import read_manifest as read_manifest
from .manifest import write_manifest as write_manifest
from .progress import ENVELOPE_KEYS as ENVELOPE_KEYS
from .progress import PROGRESS_FILE_NAME as PROGRESS_FILE_NAME
from .progress import ProgressWriter as ProgressWriter
from .progress import next_seq_for_resume as next_seq_for_resume
from .progress import read_progress as read_progress
