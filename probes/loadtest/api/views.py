"""REST API for load tests (under /api/v1/load-tests/): list and read runs (viewers),
estimate and start one, stop one (staff), and download a run's report files.

Starting is two calls by design: without `"confirm": true` the answer is only the
estimated maximum spend, so nobody spends by accident.
"""

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from probes.loadtest import jobs, plans, reports
from probes.loadtest.api import serializers as s
from probes.loadtest.models import ACTIVE, LoadTestRun
from routing.api.base import ReadOnlyViewSet

REPORT_KINDS = {
    "json": ("application/json", reports.to_json),
    "csv": ("text/csv; charset=utf-8", reports.to_csv),
    "html": ("text/html; charset=utf-8", reports.to_html),
}


NO_GATEWAY = ("No gateway address is configured for load tests: set WEATHERVANE_LOADTEST_GATEWAY_URL "
              "(or WEATHERVANE_GATEWAY_URL), or start the server with `manage.py serve`.")


class LoadTestRunViewSet(mixins.CreateModelMixin, ReadOnlyViewSet):
    queryset = LoadTestRun.objects.select_related("created_by")
    serializer_class = s.LoadTestRunSerializer

    def get_serializer_class(self):
        return s.LoadTestCreateSerializer if self.action == "create" else s.LoadTestRunSerializer

    @extend_schema(request=s.LoadTestCreateSerializer, responses={200: dict, 201: s.LoadTestRunSerializer})
    def create(self, request, *args, **kwargs):
        """Without confirm: the estimated maximum spend (nothing starts). With confirm: start the run (201)."""
        body = s.LoadTestCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        settings_ = body.as_settings()
        confirm = settings_.pop("confirm")
        try:
            spend = plans.check_spend(settings_)  # the server's cap, whoever asks and however
        except plans.OverSpendCap as over:
            raise ValidationError({"requests": [str(over)]}) from None
        if not confirm:
            return Response({"estimated_max_cost": str(spend), "settings": settings_,
                             "confirm": "Send the same body with \"confirm\": true to start."})
        gateway = jobs.gateway_url()  # from configuration only: never the caller's Host header
        if settings_.get("route") and not gateway:
            raise ValidationError({"route": [NO_GATEWAY]})
        jobs.close_abandoned()
        running = LoadTestRun.objects.filter(status__in=ACTIVE).first()
        if running is not None:
            return Response({"detail": f"Load test #{running.pk} is still running; stop it or wait for it."},
                            status=status.HTTP_409_CONFLICT)
        run = jobs.create_run(settings_, request.user)
        jobs.Job(run, gateway).start()
        return Response(s.LoadTestRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.LoadTestRunSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        """Ask a running test to stop; it ends within a second, keeping what it measured."""
        run = self.get_object()
        if request.data:
            raise ValidationError({"detail": "This call takes no body."})
        if not run.active:
            return Response({"detail": f"Load test #{run.pk} is not running ({run.status})."},
                            status=status.HTTP_409_CONFLICT)
        LoadTestRun.objects.filter(pk=run.pk).update(stop_requested=True)
        run.refresh_from_db()
        return Response(s.LoadTestRunSerializer(run).data)

    @extend_schema(parameters=[OpenApiParameter("kind", enum=list(REPORT_KINDS), default="json")],
                   responses={(200, "application/json"): dict})
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        """The run's report file: kind=json (everything), csv (one row per request) or html (offline, with charts)."""
        run = self.get_object()
        kind = request.query_params.get("kind", "json")
        if kind not in REPORT_KINDS:
            raise ValidationError({"kind": [f"Use one of {', '.join(REPORT_KINDS)}."]})
        content_type, render = REPORT_KINDS[kind]
        response = HttpResponse(render(run), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="loadtest-{run.pk}.{kind}"'
        return response
