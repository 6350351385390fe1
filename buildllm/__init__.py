"""buildllm: the code of the curriculum "Build a Large Language Model (From Scratch)", one module per concept.

Each module's docstring names the chapter that builds it; the chapter notebooks
build the same code step by step and check that they agree with this package.
"""

__version__ = "0.1.0"
