"""`python -m fsrouter`: the same CLI as the `fsrouter` command."""
from .cli import main

if __name__ == "__main__":
    main()
