"""Tokens get an expiry and a last-used time. Tokens issued before expire 90 days after this
migration (not after their creation: none stops working on the day of the upgrade)."""

from datetime import timedelta

from django.db import migrations, models
from django.utils import timezone


def expire_existing_in_90_days(apps, schema_editor):
    apps.get_model("accounts", "ApiToken").objects.filter(expires_at__isnull=True).update(
        expires_at=timezone.now() + timedelta(days=90)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="last_used_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(expire_existing_in_90_days, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(),
        ),
    ]
