"""Every provider's account is a ProviderAccount. The table keeps its first name (set before the
rename, so no data moves); staff permissions follow the model's new name."""

from django.db import migrations

OLD = "aggregatoraccount"
NEW = "provideraccount"


def permissions_follow(apps, schema_editor, *, old: str = OLD, new: str = NEW):
    permission = apps.get_model("auth", "Permission")
    for row in permission.objects.filter(content_type__app_label="payments", codename__endswith=f"_{old}"):
        row.codename = row.codename[: -len(old)] + new
        row.name = row.name.replace("aggregator account", "provider account")
        row.save(update_fields=["codename", "name"])


def permissions_go_back(apps, schema_editor):
    permissions_follow(apps, schema_editor, old=NEW, new=OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("payments", "0008_refund_requests_parent_contact"),
    ]

    operations = [
        migrations.AlterModelTable(name="aggregatoraccount", table="payments_aggregatoraccount"),
        migrations.RenameModel(old_name="AggregatorAccount", new_name="ProviderAccount"),
        migrations.RunPython(permissions_follow, permissions_go_back),
    ]
