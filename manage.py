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
    from django.db.utils import OperationalError

    start_embedded_postgres()
    try:
        execute_from_command_line(sys.argv)
    except OperationalError as exc:
        if not str(exc).startswith("connection failed"):  # psycopg's word for it
            raise
        # A server that is down, or a URL naming no database: one line, not a traceback.
        where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "the embedded PostgreSQL"
        sys.stderr.write(f"the portal's database ({where}) cannot be reached: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
