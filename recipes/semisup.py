"""The semisup recipe; run it as
`accelerate launch recipes/semisup.py --config recipes/configs/<cfg>.yaml [--section.key value ...]`.

Also runs as `python recipes/semisup.py ...`; `--help` lists the options, `--resume` continues a run.
"""

import sys

from hebbopt.cli import semisup_main

if __name__ == "__main__":
    sys.exit(semisup_main())
