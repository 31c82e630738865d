"""The `lmpipe` command (cli/main.py) and the Prefect server helpers it runs (cli/server.py).

Not flows: this is what a person types and what starts or prepares a Prefect server. It sits
above flows/ and calls them; nothing in flows/, tasks/ or schemas/ imports it.

    python -m cli run          # the same as `lmpipe run`
"""
