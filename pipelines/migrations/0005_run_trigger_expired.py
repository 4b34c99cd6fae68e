from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0004_run_trigger_detail"),
    ]

    operations = [
        migrations.AlterField(
            model_name="pipelinerun",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("user", "User"),
                    ("schedule", "Schedule"),
                    ("retry", "Retry"),
                    ("production", "Production change"),
                    ("expired", "Expired"),
                ],
                default="user",
                max_length=16,
            ),
        ),
    ]
