"""Built-in datasets; each module defines one and registers it by entry point."""
