from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("floor", "0001_initial")]

    operations = [
        migrations.AddField(model_name="floorevent", name="processed_at", field=models.DateTimeField(null=True)),
    ]
