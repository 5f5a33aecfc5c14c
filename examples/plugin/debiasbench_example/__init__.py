"""An example debiasbench plugin: one method (focal loss) and one dataset (coloured stripes).

Nothing here is imported by debiasbench itself: the registry finds both classes through
the entry points declared in this package's ``pyproject.toml``.
"""
