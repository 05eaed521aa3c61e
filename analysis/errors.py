"""The one exception type for user mistakes in the analyses (missing files, columns, wrong inputs)."""


class AnalysisError(Exception):
    """A problem with the user's inputs; ``pet-analyze`` prints it as one line and exits non-zero."""
