"""Download the pretrained weights chapter 5 generates with (GPT-2 small by default).

`--help` lists the choices (SmolLM2 works offline).
"""

import sys

from buildllm.cli import download_main

if __name__ == "__main__":
    sys.exit(download_main(sys.argv[1:], chapter="ch05"))
