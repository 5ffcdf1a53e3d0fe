"""The errors a user can fix, and their common base: the stage runner (stage.py) and the tools
(cli.py) print any StudyError as one `error:` line instead of a traceback. The base lives in a
module of its own so that the runner catches every stage's errors without importing every stage,
and the modules that validate a section (params.py, transforms.py) need not import each other."""


class StudyError(Exception):
    """An error whose message names the file, key or value and says what would be accepted."""


class ParamsError(StudyError, ValueError):
    """A params.yaml value that the study cannot use; the message names the key path."""
