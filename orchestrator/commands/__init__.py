"""The subcommands that are more than a line, one module each (see ARCHITECTURE.md): each has its
`add_<name>_parser(commands)` and `cmd_<name>(args) -> exit status`; orchestrator/__main__.py wires them."""

EXIT_USER_ERROR = 2  # a mistake the user can fix: __main__ returns it for a UserError, a command for its own
