"""The coding agent (coding-agent-loop spec): tools acting on a local working directory.

:class:`ToolBox` offers the model ``read_file``, ``write_file``, ``edit_file``, ``shell``,
``grep``, ``glob`` and ``report_status`` (contract.md §7, §9) on top of a
:class:`LocalEnvironment` (path safety, secret filtering, process groups).
"""

from .env import ExecResult as ExecResult
from .env import LocalEnvironment as LocalEnvironment
from .env import ToolError as ToolError
from .env import filter_env as filter_env
from .env import is_secret_name as is_secret_name
from .specs import DEFAULT_TIMEOUT_MS as DEFAULT_TIMEOUT_MS
from .specs import MAX_TIMEOUT_MS as MAX_TIMEOUT_MS
from .specs import TOOL_NAMES as TOOL_NAMES
from .specs import tool_specs as tool_specs
from .tools import ToolBox as ToolBox
from .tools import ToolResult as ToolResult
from .tools import truncate_lines as truncate_lines
from .tools import truncate_output as truncate_output
from .tools import truncate_tool_output as truncate_tool_output
