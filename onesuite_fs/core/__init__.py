"""The pure core: a site's layer stacks, the rsync merge rule, layer access, oneSIS rules and
the path-addressed View of a root. Imports nothing from the daemon, the CLI, pyfuse3, trio or
the terminal (tests/test_import_rules.py holds that)."""
