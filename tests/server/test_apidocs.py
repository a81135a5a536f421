"""``/docs`` and ``/redoc`` load only this server's assets, and the OpenAPI document lets ``/docs`` authorise
the admin routes. That the pages render offline in a browser is checked in ``test_viewer.py``."""

from __future__ import annotations

import re

from pydantic import SecretStr

from server.apidocs import DOCS_ASSETS


def _urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url: '([^']*)'", html) \
        + re.findall(r'spec-url="([^"]*)"', html)


def test_docs_pages_reference_only_local_urls_and_their_assets_are_served(client):
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text and "//" not in "".join(_urls(page.text))
        assert f"/static/docs/{asset}" in _urls(page.text) and "/openapi.json" in _urls(page.text)
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp  # the browser refuses other hosts too
    assert '"validatorUrl": null' in client.get("/docs").text  # no document sent to validator.swagger.io
    for name in DOCS_ASSETS:
        reply = client.get(f"/static/docs/{name}")
        assert reply.status_code == 200 and len(reply.content) > 500, name
    licences = client.get("/static/LICENSES.txt").text
    assert re.search(r"swagger-ui-dist 5\.\d+\.\d+ \(Apache-2\.0\)", licences)
    assert re.search(r"redoc 2\.\d+\.\d+ \(MIT\)", licences)


def test_the_docs_routes_are_ours_not_fastapis_cdn_pages(client):
    assert client.app.docs_url is None and client.app.redoc_url is None
    assert client.get("/docs/oauth2-redirect").status_code == 404  # no OAuth2 flow: the token is typed in
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


def test_the_openapi_document_declares_the_admin_bearer_scheme_on_the_admin_routes_only(client):
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"adminToken": {"type": "http", "scheme": "bearer", "description": schemes["adminToken"]["description"]}}
    secured, open_ = set(), set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            (secured if operation.get("security") == [{"adminToken": []}] else open_).add(f"{method} {path}")
    assert {"get /admin/jobs", "post /admin/jobs", "put /admin/models/{name}/serving", "get /logs"} <= secured
    assert all(p.split()[1].startswith(("/admin/", "/logs")) for p in secured)
    assert not any(p.split()[1].startswith(("/admin/", "/logs")) for p in open_)
    assert "get /v1/models" in open_


def test_an_empty_bearer_token_gets_the_servers_401_not_fastapis(client):
    client.app.state.settings.admin_token = SecretStr("secret-token")
    for header in ({"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        reply = client.get("/admin/jobs", headers=header)
        assert reply.status_code == 401, header
        assert reply.json() == {"error": "Unauthorized",
                                "detail": "this admin route needs the header 'Authorization: Bearer <token>'"}
