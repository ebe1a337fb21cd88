"""`python -m tunelab.platform.cli`, as background drivers are started."""

from tunelab.platform.cli import main

if __name__ == "__main__":
    main()
