"""Pages for the teams that publish data products, and the gateway's home page: server-rendered,
no JavaScript, the look of the legal pages (``templates/legal/base.html``) and their security
headers.

They authenticate as the internal API does: the identity provider's access token in
``Authorization: Bearer``. A browser gets it from the OIDC-aware proxy in front of the gateway
(oauth2-proxy with ``--pass-authorization-header``, or the ingress' own OIDC module); the gateway
keeps no session of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from gateway import __version__
from gateway.adapters.http.charts import chart_of, levels_view
from gateway.adapters.http.deps import CurrentTeamMember, GatewayDep
from gateway.adapters.http.routes.products import consumers_public
from gateway.adapters.http.security import LEGAL_HEADERS
from gateway.services.products import managed_product, products_managed_by

router = APIRouter(tags=["teams"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")


@router.get("/teams/products", response_class=HTMLResponse)
def products_page(request: Request, member: CurrentTeamMember, gateway: GatewayDep) -> HTMLResponse:
    products = products_managed_by(gateway.registry, member)
    return templates.TemplateResponse(
        request, "teams/products.html", {"products": products, "now": datetime.now(UTC)}
    )


@router.get("/teams/products/{product}", response_class=HTMLResponse)
async def consumers_page(
    request: Request, product: str, member: CurrentTeamMember, gateway: GatewayDep
) -> HTMLResponse:
    found = managed_product(gateway.registry, member, product)
    view = await consumers_public(gateway, member, product)
    levels = {}
    for consumer in view.consumers:
        levels[consumer.contract] = levels_view(
            *await gateway.service_levels.report(consumer.contract)
        )
    context = {
        "product": found,
        "consumers": view.consumers,
        "charts": [chart_of(c) for c in view.consumers],
        "levels": levels,
        "log_end": view.log_end,
        "log_end_total": sum(view.log_end.values()),
        "now": datetime.now(UTC),
    }
    return templates.TemplateResponse(request, "teams/consumers.html", context)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, gateway: GatewayDep) -> HTMLResponse:
    """A small page for whoever opens the gateway's URL in a browser: where each user goes."""
    context = {"version": __version__, "base": gateway.settings.issuer(), "now": datetime.now(UTC)}
    response = templates.TemplateResponse(request, "home.html", context)
    response.headers.update({name.decode(): value.decode() for name, value in LEGAL_HEADERS})
    return response
