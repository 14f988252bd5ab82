"""Refund syncs become adjustments: one document per money movement of the payment's ledger.

Each existing refund step was a share of the payment's refunded total, which the payments
migration turned into a refunded-total fact: the ledger's ``refund:unattributed`` movement. The
steps are carried over as that movement's documents, so what is booked still matches the ledger
and nothing is sent twice.
"""

import django.db.models.deletion
from django.db import migrations, models

COPIED = (
    "school_id", "payment_id", "status", "realm_id", "txn_type", "txn_id", "txn_date", "amount_minor", "currency",
    "request_id", "revision", "request_body", "in_doubt", "attempts", "last_error", "last_error_code",
    "intuit_tid", "next_attempt_at", "claimed_until", "details", "created_at", "updated_at", "synced_at",
)  # fmt: skip


def refunds_to_adjustments(apps, schema_editor):
    QboRefundSync = apps.get_model("quickbooks_sync", "QboRefundSync")
    QboAdjustmentSync = apps.get_model("quickbooks_sync", "QboAdjustmentSync")
    sequence: dict = {}
    for refund in QboRefundSync.objects.order_by("payment_id", "refund_total_minor"):
        step = sequence.get(refund.payment_id, 0)
        sequence[refund.payment_id] = step + 1
        QboAdjustmentSync.objects.create(
            movement="refund:unattributed",
            sequence=step,
            direction="out",
            **{name: getattr(refund, name) for name in COPIED},
        )


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0005_ledger'),
        ('quickbooks_sync', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='QboAdjustmentSync',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('synced', 'Synced'), ('failed', 'Sync failed'), ('paused', 'Paused')], default='pending', max_length=16)),
                ('realm_id', models.CharField(blank=True, default='', max_length=32)),
                ('txn_type', models.CharField(blank=True, default='', max_length=32, verbose_name='QuickBooks type')),
                ('txn_id', models.CharField(blank=True, default='', max_length=32, verbose_name='QuickBooks id')),
                ('txn_date', models.DateField()),
                ('amount_minor', models.BigIntegerField()),
                ('currency', models.CharField(max_length=3)),
                ('request_id', models.CharField(blank=True, default='', max_length=50)),
                ('revision', models.PositiveIntegerField(default=0)),
                ('request_body', models.JSONField(blank=True, null=True)),
                ('in_doubt', models.BooleanField(default=False)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('last_error', models.TextField(blank=True, default='')),
                ('last_error_code', models.CharField(blank=True, default='', max_length=16)),
                ('intuit_tid', models.CharField(blank=True, default='', max_length=64)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('claimed_until', models.DateTimeField(blank=True, null=True)),
                ('details', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('synced_at', models.DateTimeField(blank=True, null=True)),
                ('movement', models.CharField(max_length=300)),
                ('sequence', models.PositiveIntegerField(default=0)),
                ('direction', models.CharField(choices=[('out', 'Money out (RefundReceipt)'), ('in', 'Money in (SalesReceipt)')], max_length=3)),
                ('payment', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='qbo_adjustments', to='payments.payment')),
                ('school', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, to='payments.school')),
            ],
            options={
                'verbose_name': 'refund or adjustment sync',
                'ordering': ['-created_at'],
            },
        ),
        migrations.RunPython(refunds_to_adjustments, migrations.RunPython.noop),
        migrations.DeleteModel(
            name='QboRefundSync',
        ),
        migrations.AddIndex(
            model_name='qboadjustmentsync',
            index=models.Index(condition=models.Q(('status__in', ['pending', 'paused'])), fields=['school', 'status', 'next_attempt_at'], name='qbo_adjustment_sync_open'),
        ),
        migrations.AddConstraint(
            model_name='qboadjustmentsync',
            constraint=models.UniqueConstraint(fields=('payment', 'movement', 'sequence'), name='uniq_qbo_adjustment_step'),
        ),
        migrations.AddConstraint(
            model_name='qboadjustmentsync',
            constraint=models.UniqueConstraint(condition=models.Q(('txn_id', ''), _negated=True), fields=('realm_id', 'txn_type', 'txn_id'), name='uniq_qbo_adjustment_txn'),
        ),
        migrations.AddConstraint(
            model_name='qboadjustmentsync',
            constraint=models.CheckConstraint(condition=models.Q(('amount_minor__gt', 0)), name='qbo_adjustment_amount_positive'),
        ),
    ]
