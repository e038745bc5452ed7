"""The subcommands that are more than a line, one module each (see ARCHITECTURE.md)."""
