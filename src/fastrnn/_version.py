"""The one place fastrnn's version is written.

setuptools reads it for the package metadata (pyproject.toml's
``[tool.setuptools.dynamic]``); ``fastrnn.__version__`` and every module that
records the version in a file (saved models, checkpoints, ONNX graphs) import
it from here rather than from the package root, so no lower module imports
the root.
"""

__version__ = "0.1.0"
