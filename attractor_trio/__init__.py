"""attractor-trio: run Attractor pipelines on Trio.

The public API is re-exported here explicitly; everything else is private.
"""

from ._version import __version__ as __version__
from .errors import AttractorError as AttractorError
from .errors import ConfigError as ConfigError
from .errors import DotSyntaxError as DotSyntaxError
from .errors import ValidationError as ValidationError
from .errors import ValidationFailed as ValidationFailed
from .graph import Diagnostic as Diagnostic
from .graph import Edge as Edge
from .graph import Graph as Graph
from .graph import Node as Node
from .graph import Severity as Severity
