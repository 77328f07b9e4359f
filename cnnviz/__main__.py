"""``python -m cnnviz`` runs the command line."""
from cnnviz.cli.main import main

if __name__ == "__main__":
    main(prog_name="cnnviz")
