"""Run Quanda from a checkout: `python main.py` serves http://127.0.0.1:5001 on the embedded SQLite store
(the same as `quanda serve`; both need `pip install -e .` first)."""

from quanda.serve import main

if __name__ == "__main__":
    main()
