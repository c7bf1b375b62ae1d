"""`python -m connector.demo ARGS`: run `connector demo` on its own."""

from __future__ import annotations

import sys

from connector.demo.command import main

sys.exit(main())
