"""The cases of the Kernel IR: enums whose cases are strings (`TextEnum`), and dataclass fields
that hold one (`Case`), so that a plain string assigned to such a field becomes its case."""
from enum import Enum


class TextEnum(str, Enum):
    """An enum whose cases are strings: equal to, and printed as, their text (so code comparing
    with the plain string keeps working; Python 3.10's enum has no StrEnum)."""

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)


class Case:
    """A dataclass field holding a case of the enum `kind` (with `default`, or none): a string
    assigned to it (by the constructor or later: `kernel.strategy = 'rows'`) becomes its case, an
    unknown one a ValueError. A descriptor, so that the other fields are set as plain attributes
    (a per-field `__setattr__` was most of the cost of copying a kernel)."""

    def __init__(self, kind, default=None):
        self.kind, self.default = kind, default

    def __set_name__(self, owner, name):
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is not None:
            return obj.__dict__[self.slot]
        if self.default is None:  # the dataclass then sees a field without a default
            raise AttributeError(self.slot)
        return self.default

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value if type(value) is self.kind else self.kind(value)
