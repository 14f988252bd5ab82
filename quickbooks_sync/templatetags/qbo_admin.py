"""``{% qbo_banner %}``: on every admin page, a banner for each school whose QuickBooks
authorization is gone, with its waiting payments and a reconnect button."""

from django import template

from quickbooks_sync import selectors

register = template.Library()


@register.inclusion_tag("quickbooks_sync/banner.html", takes_context=True)
def qbo_banner(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_staff:
        return {"alerts": []}
    alerts = []
    for connection in selectors.connections_needing_attention(user=user):
        backlog = selectors.backlog_counts(school_id=connection.school_id)
        alerts.append({"connection": connection, "waiting": backlog["paused"] + backlog["pending"]})
    return {"alerts": alerts, "request": request, "csrf_token": context.get("csrf_token")}
