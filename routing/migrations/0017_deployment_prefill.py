from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('routing', '0016_route_continue_streams_choice'),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='prefill_checked_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='deployment',
            name='prefill_detail',
            field=models.CharField(blank=True, editable=False, max_length=300),
        ),
        migrations.AddField(
            model_name='deployment',
            name='prefill_due_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When the prefill check runs next (also its claim while it runs)', null=True),
        ),
        migrations.AddField(
            model_name='deployment',
            name='prefill_model',
            field=models.CharField(blank=True, editable=False, help_text='The upstream model the prefill check was made with', max_length=200),
        ),
        migrations.AddField(
            model_name='deployment',
            name='prefill_support',
            field=models.CharField(choices=[('verified', 'Verified'), ('refused', 'Refused'), ('unknown', 'Unknown')], default='unknown', editable=False, help_text='Whether it continues a final assistant message (checked by a probe)', max_length=10),
        ),
    ]
