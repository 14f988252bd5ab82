"""On PostgreSQL the database itself refuses UPDATE and DELETE on the audit log, so no code
path (a raw query, a shell session, a future bug) can rewrite history."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION payments_auditlog_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'payments_auditlog is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payments_auditlog_append_only
    BEFORE UPDATE OR DELETE ON payments_auditlog
    FOR EACH ROW EXECUTE FUNCTION payments_auditlog_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS payments_auditlog_append_only ON payments_auditlog;
DROP FUNCTION IF EXISTS payments_auditlog_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
