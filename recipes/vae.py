"""The vae recipe; run it as
`accelerate launch recipes/vae.py --config recipes/configs/<cfg>.yaml [--section.key value ...]`.

Also runs as `python recipes/vae.py ...`; `--help` lists the options, `--resume` continues a run.
"""

import sys

from hebbopt.cli import vae_main

if __name__ == "__main__":
    sys.exit(vae_main())
