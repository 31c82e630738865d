"""`python -m cli ...` runs the `lmpipe` command (subprocess tests, no installed script needed)."""

import sys

from cli.main import main

sys.exit(main())
