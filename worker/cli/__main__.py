"""`python -m worker.cli`: the same as the `tlogsync` command."""

from worker.cli import main

raise SystemExit(main())
