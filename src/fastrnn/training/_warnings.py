"""Warnings attributed to the user's code rather than to fastrnn's fit loop."""

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def warn_from_caller(message, category):
    """``warnings.warn`` attributed to the first frame outside fastrnn (the
    user's ``fit(...)`` line), however deep in the fit loop it is raised."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
