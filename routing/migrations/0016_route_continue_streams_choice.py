"""Route.continue_streams becomes a choice: auto (the new default), on or off.

A route that had opted in (True) keeps continuing on every target: "on". A route left at the old default
(False) gets the new default, "auto": it continues only on targets whose prefill probe verified it, and
until a probe has verified one it behaves as before (the error event). There was no way to tell an
explicit "no" from the default, so nobody's False becomes "off"; set it with the API or the admin.
"""

from django.db import migrations, models

CHOICES = [("auto", "Auto: on targets whose prefill support a probe verified"),
           ("on", "On: on every target not seen refusing a prefill"),
           ("off", "Off: a broken stream ends with an error event")]
HELP = ("When a stream breaks after content reached the client, continue it on another target by sending the text "
        "so far as an assistant prefill. Auto: only on targets whose probe verified they continue it; on: also on "
        "targets not checked yet (never on one seen refusing); off: never.")


def to_choice(apps, schema_editor):
    Route = apps.get_model("routing", "Route")
    Route.objects.filter(continue_streams_old=True).update(continue_streams="on")
    Route.objects.filter(continue_streams_old=False).update(continue_streams="auto")


def to_boolean(apps, schema_editor):
    Route = apps.get_model("routing", "Route")
    Route.objects.filter(continue_streams="on").update(continue_streams_old=True)
    Route.objects.exclude(continue_streams="on").update(continue_streams_old=False)


class Migration(migrations.Migration):

    dependencies = [
        ('routing', '0015_deployment_discovered_windows'),
    ]

    operations = [
        migrations.RenameField(model_name='route', old_name='continue_streams', new_name='continue_streams_old'),
        migrations.AddField(
            model_name='route',
            name='continue_streams',
            field=models.CharField(choices=CHOICES, default='auto', help_text=HELP, max_length=4,
                                   verbose_name='continue broken streams'),
        ),
        migrations.RunPython(to_choice, to_boolean),
        migrations.RemoveField(model_name='route', name='continue_streams_old'),
    ]
