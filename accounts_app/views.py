from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts_app.selectors import visible_accounts


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    accounts = visible_accounts(request.user).prefetch_related("runs")
    return render(request, "accounts/dashboard.html", {"accounts": accounts})
