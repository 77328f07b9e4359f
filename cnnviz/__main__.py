"""``python -m cnnviz`` runs the command line."""
from cnnviz.cli.main import run

if __name__ == "__main__":
    run()
