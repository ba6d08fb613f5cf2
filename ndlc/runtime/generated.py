"""Python functions generated from source lines (as collections.namedtuple generates its methods):
straight-line code for a hot path, every object it reads bound to a name of its own."""


class SourceWriter:
    """A function's body lines and the objects its names stand for (`names`: those it starts with)."""

    def __init__(self, names=None, indent=1):
        self.lines, self.indent = [], indent
        self.names = dict(names or {})

    def const(self, value) -> str:
        """A name standing for `value` in the function."""
        name = f"k{len(self.names)}"
        self.names[name] = value
        return name

    def line(self, text):
        self.lines.append("    " * self.indent + text)

    def function(self, name, parameters):
        """The function `name(parameters)` of the lines written, its source kept as `.source`."""
        source = f"def {name}({parameters}):\n" + "\n".join(self.lines) + "\n"
        exec(compile(source, f"<ndlc {name}>", "exec"), self.names)
        function = self.names[name]
        function.source = source
        return function
