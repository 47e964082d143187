"""`python -m custseg ...` is the `custseg` command."""

from custseg.cli import main

raise SystemExit(main())
