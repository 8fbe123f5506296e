"""`python -m churnflow.cli`, the same as the `churnflow` command."""

import sys

from churnflow.cli import main

sys.exit(main())
