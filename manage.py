#!/usr/bin/env python
"""Django's command-line utility for the portal.

With no DATABASE_URL, every command runs on the embedded PostgreSQL under var/
(portal/local_postgres.py): this starts it, or joins the one already running, and it
stops when the last process using it exits.
"""

import os
import sys

from portal.local import start_embedded_postgres


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    start_embedded_postgres()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
