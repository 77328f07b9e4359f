"""The ``cnnviz`` command line (installed as ``cnnviz.cli``): parse, call the library, report."""
