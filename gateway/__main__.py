"""``python -m gateway`` and the ``gateway`` command."""

import sys


def run() -> None:
    # Ctrl-C while the command is still importing: exit as interrupted, not with a traceback
    # out of whichever module was loading.
    try:
        from gateway.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
