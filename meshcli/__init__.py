"""The ``openbank-mesh`` command line: run the local mesh, run one process, operate it."""
