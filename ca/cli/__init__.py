"""The ``ikepki`` command line."""
