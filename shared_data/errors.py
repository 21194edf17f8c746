"""The one exception type every bad input raises."""

from __future__ import annotations


class DataError(Exception):
    """Bad input to the data pipeline.

    The message names the offending file, folder or option and says what to do;
    the CLI prints it as one line, without a traceback.
    """
