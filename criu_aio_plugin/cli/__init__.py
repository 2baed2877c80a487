"""The ``criu-aio`` command line: a thin dispatcher and one module per subcommand."""
