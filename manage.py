#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.local")
    if sys.argv[1:2] == ["drain"]:
        # A preStop hook: readiness turns 503 before Django's setup, not seconds after it.
        from lifecycle.drain import drain_before_setup

        drain_before_setup(sys.argv[2:])
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
