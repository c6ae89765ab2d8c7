import json
import os
from datetime import timedelta

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import clustersync
from clustersync.contrib.django import get_store


@csrf_exempt  # a JSON API for the example; keep CSRF protection for forms
@require_POST
def schedule_reminder(request: HttpRequest) -> JsonResponse:
    """``{"key": "remind:42", "in_seconds": 7200, "props": {"user": 42}}``: store a
    reminder that fires once, on whichever process is alive then."""
    try:
        data = json.loads(request.body)
        key, delay = str(data["key"]), timedelta(seconds=float(data.get("in_seconds", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        return JsonResponse({"error": f"bad request: {exc}"}, status=400)
    scheduler = clustersync.get_job_once_scheduler(get_store())
    try:
        job = scheduler.schedule_once(key, timezone.now() + delay, data.get("props"))
    except clustersync.DuplicateJobError:
        return JsonResponse({"error": f"{key!r} is pending"}, status=409)
    except (ValueError, TypeError) as exc:  # a bad key, props too large or not JSON
        return JsonResponse({"error": str(exc)}, status=400)
    body = {"key": job.key, "run_at": job.run_at.isoformat(), "props": job.props}
    return JsonResponse(body, status=201)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "pid": os.getpid()})
