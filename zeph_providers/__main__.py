"""`python -m zeph_providers ...`: the same command as `zeph-providers`."""

from __future__ import annotations

import sys

from zeph_providers.cli import main

if __name__ == "__main__":
    sys.exit(main())
