from django.db import migrations, models


class Migration(migrations.Migration):
    # After 0004 filled confirmed_at of the purchases confirmed before payments were checked.

    dependencies = [
        ("governance", "0004_ledger_from_existing_data"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="purchase",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("confirmed_at__isnull", False), ("status", "confirmed")),
                    models.Q(("status", "confirmed"), _negated=True),
                    _connector="OR",
                ),
                name="purchase_confirmed_has_time",
            ),
        ),
    ]
