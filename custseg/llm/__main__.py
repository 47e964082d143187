import sys

from custseg.llm.cli import main

sys.exit(main())
