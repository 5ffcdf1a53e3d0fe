"""The error a bad params.yaml value raises, in a module of its own so that the modules that
validate a section (params.py, augment.py) need not import each other."""


class ParamsError(ValueError):
    """A params.yaml value that the study cannot use; the message names the key path."""
