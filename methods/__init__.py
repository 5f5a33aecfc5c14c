"""Built-in methods; each module defines one and registers it by entry point."""
