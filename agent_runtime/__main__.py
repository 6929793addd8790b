"""`python -m agent_runtime` is the `agent` command."""

import sys

from agent_runtime import main

sys.exit(main())
